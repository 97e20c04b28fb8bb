"""What benchmarks/serve.py and serve_load.py share: a `lasagna serve` subprocess on 127.0.0.1, client threads."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Reply:
    kind: str
    status: int  # 0: no HTTP answer (connection error)
    seconds: float
    body: object = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m lasagna.cli serve ARGS` on 127.0.0.1 and a free port, stopped on exit."""

    def __init__(self, *args: str, log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (closed in __exit__)
        cmd = [sys.executable, "-m", "lasagna.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self._out = out

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}")
            try:
                if httpx2.get(self.url + "/v1/health", timeout=2).status_code == 200:
                    return self
            except httpx2.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server did not answer /v1/health within 120 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._out is not subprocess.DEVNULL:
            self._out.close()

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far, all its threads (Linux /proc), user + system."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        """The server process's peak resident memory so far (Linux VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")


Ask = Callable[[httpx2.Client, int], Reply]
"""(client, request number) -> the reply; runs in a client thread."""


def run_clients(
    url: str, clients: int, seconds: float, ask: Ask, headers: dict | None = None
) -> tuple[list[Reply], float]:
    """`clients` threads sending requests one after another, starting new ones for `seconds` -> (every reply in no
    particular order, wall seconds until the last one came back)."""
    replies: list[Reply] = []
    lock = threading.Lock()
    start = time.monotonic()
    stop = start + seconds
    counter = iter(range(10**9))

    def loop() -> None:
        with httpx2.Client(base_url=url, timeout=300, headers=headers or {}) as client:
            while time.monotonic() < stop:
                with lock:
                    n = next(counter)
                reply = ask(client, n)
                with lock:
                    replies.append(reply)

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return replies, time.monotonic() - start


def timed(kind: str, send: Callable[[], httpx2.Response]) -> Reply:
    start = time.perf_counter()
    try:
        response = send()
    except httpx2.HTTPError as err:
        return Reply(kind, 0, time.perf_counter() - start, repr(err))
    try:
        body = response.json()
    except ValueError:
        body = response.text[:200]
    return Reply(kind, response.status_code, time.perf_counter() - start, body)


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def cpu_note() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} CPUs, load average {load:.1f} at the end"
