"""Request batching: jobs wait in a queue on the event loop; one worker thread runs them, a batch at a time.

A batch is up to `max_batch` queued jobs with the same key (class lists with the same decoder), gathered for at most
`timeout` seconds after the first of them arrived; jobs without a key (queries, chat) run alone. While a batch runs,
new requests queue up, so under load the next batch fills at once and costs no waiting. Jobs keep their order:
one of another key is taken in the next round. A job whose caller gave up (timeout, closed connection) has its
future cancelled and is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

RunBatch = Callable[[Hashable | None, list[Any]], list[Any]]
"""(key, payloads) -> one result per payload, in order; a result that is an exception is raised to its caller."""


class QueueFull(RuntimeError):
    """More jobs are waiting than the batcher accepts."""


@dataclass(eq=False)
class Job:
    key: Hashable | None
    payload: Any
    future: asyncio.Future
    arrived: float = field(default=0.0)


class Batcher:
    """Gathers jobs into batches and runs them with `run` in one worker thread (so the model is never used by two
    threads at once). `start` and `stop` belong to the app's lifespan."""

    def __init__(self, run: RunBatch, max_batch: int, timeout: float, max_queue: int):
        self.run, self.max_batch, self.timeout, self.max_queue = run, max_batch, timeout, max_queue
        self._pending: list[Job] = []
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.batch_sizes: list[int] = []  # sizes of the batches run so far (tests and /v1/health read them)

    @property
    def waiting(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lasagna-model")
        self._task = asyncio.create_task(self._loop(), name="lasagna-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self._pending:
            job.future.cancel()
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def submit(self, key: Hashable | None, payload: Any) -> asyncio.Future:
        """Queue a job; await the returned future for its result. Raises `QueueFull` past `max_queue` waiting."""
        if self._task is None or self._arrived is None:
            raise RuntimeError("the batcher is not running (start it in the app's lifespan)")
        if len(self._pending) >= self.max_queue:
            raise QueueFull(f"{len(self._pending)} requests are waiting")
        loop = asyncio.get_running_loop()
        job = Job(key, payload, loop.create_future(), loop.time())
        self._pending.append(job)
        self._arrived.set()
        return job.future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._pending = [j for j in self._pending if not j.future.done()]
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            first = self._pending[0]
            if first.key is not None and self.max_batch > 1:
                await self._gather(first, loop)
            batch = self._take(first)
            if not batch:
                continue
            self.batch_sizes.append(len(batch))
            try:
                results = await loop.run_in_executor(self._executor, self.run, first.key, [j.payload for j in batch])
            except Exception as err:  # why: `run` reports failures per job; this is only its own breakage
                results = [err] * len(batch)
            for job, result in zip(batch, results, strict=True):
                if job.future.done():
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    async def _gather(self, first: Job, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until `max_batch` jobs share `first`'s key or `timeout` has passed since it arrived."""
        deadline = first.arrived + self.timeout
        while sum(j.key == first.key for j in self._pending) < self.max_batch:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                return

    def _take(self, first: Job) -> list[Job]:
        """Remove and return `first` and, if it has a key, the next jobs with that key, up to `max_batch`."""
        batch = [first] if first.key is None else [j for j in self._pending if j.key == first.key][: self.max_batch]
        chosen = set(map(id, batch))
        self._pending = [j for j in self._pending if id(j) not in chosen]
        return [j for j in batch if not j.future.done()]
