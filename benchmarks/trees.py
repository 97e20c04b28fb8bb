"""Two source trees side by side: an old commit checked out in a temporary detached git worktree, and this tree.

The benchmarks that compare code before and after a change (`startup.py`, `inference.py`) run each tree's code in
child processes with `PYTHONPATH=<tree>/src`, so both run on the same interpreter, packages and machine, in one run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OLD = "d803c2b"
"""The commit before the speed issue's work: template decoding without restarts, start-up importing everything."""


@dataclass(frozen=True)
class Tree:
    """A checkout whose `src/` holds a `lasagna` package; `label` names it in reports."""

    label: str
    root: Path

    def env(self, threads: int = 1, **extra: str) -> dict[str, str]:
        """The environment of a child process that imports this tree's `lasagna` (and nothing else's)."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(
            PYTHONPATH=str(self.root / "src"),
            OMP_NUM_THREADS=str(threads),
            MKL_NUM_THREADS=str(threads),
            TOKENIZERS_PARALLELISM="false",
            HF_HUB_OFFLINE="1",
            **extra,
        )
        return env

    def run(self, args: list[str], what: str, *, threads: int = 1, timeout: float = 600, **extra: str):
        """`python ARGS` with this tree's code, from a scratch folder (so no other `lasagna` is found first); `what`
        names the call in an error."""
        with tempfile.TemporaryDirectory(prefix="lasagna-bench-") as scratch:
            done = subprocess.run(
                [sys.executable, *args],
                cwd=scratch,
                env=self.env(threads, **extra),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        if done.returncode != 0:
            raise RuntimeError(f"{self.label}: {what} failed:\n{done.stderr[-3000:]}")
        return done


def resolve(rev: str) -> str:
    """The short hash of `rev` in this repository, or a ValueError naming it."""
    done = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise ValueError(f"--old {rev!r} is not a commit of {ROOT}: {done.stderr.strip()}")
    return done.stdout.strip()


@contextlib.contextmanager
def old_and_new(rev: str = DEFAULT_OLD) -> Iterator[tuple[Tree, Tree]]:
    """(the commit `rev` in a temporary detached worktree, this tree); the worktree is removed on the way out."""
    short = resolve(rev)
    scratch = Path(tempfile.mkdtemp(prefix=f"lasagna-{short}-"))
    checkout = scratch / "tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(checkout), short],
        check=True,
        capture_output=True,
    )
    try:
        yield Tree(short, checkout), Tree("this tree", ROOT)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout)], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


def turns(n: int, trees: tuple[Tree, Tree]) -> Iterator[Tree]:
    """`n` rounds over both trees, the first going first in even rounds and second in odd ones, so a machine whose
    load drifts slows both alike."""
    for i in range(n):
        yield from trees if i % 2 == 0 else trees[::-1]
