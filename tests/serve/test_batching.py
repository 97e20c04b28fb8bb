"""serve/batching.py without a model: which jobs run together, in what order, and what each caller gets back."""

from __future__ import annotations

import asyncio

import pytest

from lasagna.serve.batching import Batcher, QueueFull


def run_jobs(jobs: list[tuple[str | None, object]], work, max_batch: int = 3, timeout: float = 0.05) -> list:
    """Submit all `jobs` at once to a fresh batcher; each caller's result, or the exception it got."""

    async def main():
        batcher = Batcher(work, max_batch=max_batch, timeout=timeout, max_queue=100)
        await batcher.start()
        futures = [batcher.submit(key, payload) for key, payload in jobs]
        results = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.stop()
        return results

    return asyncio.run(main())


def recorder():
    calls = []

    def work(key, payloads):
        calls.append((key, list(payloads)))
        return [p * 10 for p in payloads]

    return calls, work


def test_jobs_with_a_key_run_together_up_to_max_batch_and_keyless_ones_alone():
    calls, work = recorder()
    results = run_jobs([("k", 0), ("k", 1), (None, 7), ("k", 2), ("k", 3), (None, 8)], work)
    assert results == [0, 10, 70, 20, 30, 80]
    assert calls == [("k", [0, 1, 2]), (None, [7]), ("k", [3]), (None, [8])]  # the oldest waiting job goes next


def test_other_keys_wait_for_their_own_batch_in_order():
    calls, work = recorder()
    assert run_jobs([("a", 1), ("b", 2), ("a", 3), ("b", 4)], work) == [10, 20, 30, 40]
    assert calls == [("a", [1, 3]), ("b", [2, 4])]


def test_max_batch_one_runs_every_job_alone():
    calls, work = recorder()
    run_jobs([("k", 1), ("k", 2)], work, max_batch=1)
    assert calls == [("k", [1]), ("k", [2])]


def test_each_caller_gets_its_own_result_or_error():
    def work(key, payloads):
        return [ValueError(f"bad {p}") if p < 0 else p for p in payloads]

    ok, bad, also_ok = run_jobs([("k", 1), ("k", -1), ("k", 2)], work)
    assert (ok, also_ok) == (1, 2)
    assert isinstance(bad, ValueError) and str(bad) == "bad -1"


def test_a_broken_runner_fails_its_batch_and_the_batcher_goes_on():
    def work(key, payloads):
        if key == "broken":
            raise RuntimeError("runner broke")
        return payloads

    first, second = run_jobs([("broken", 1), ("fine", 2)], work)
    assert isinstance(first, RuntimeError) and second == 2


def test_cancelled_jobs_are_skipped_and_a_full_queue_refuses():
    calls, work = recorder()

    async def main():
        batcher = Batcher(work, max_batch=4, timeout=0.01, max_queue=2)
        await batcher.start()
        gone = batcher.submit("k", 1)
        kept = batcher.submit("k", 2)
        with pytest.raises(QueueFull):
            batcher.submit("k", 3)
        gone.cancel()
        result = await kept
        await batcher.stop()
        return result

    assert asyncio.run(main()) == 20
    assert calls == [("k", [2])]
