"""Training curves of several runs side by side: the mean of each loss part per window of steps.

    python tools/compare_runs.py runs/a runs/b [--every 250] [--keys dice ce]

Reads each run folder's metrics.jsonl (the lines that carry the keys; evaluation lines are skipped).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def curve(run: Path, keys: list[str]) -> dict[int, dict[str, float]]:
    """{step: {key: value}} of the lines of `run`/metrics.jsonl that carry every key."""
    path = run / "metrics.jsonl"
    if not path.exists():
        raise SystemExit(f"{path} not found: give training run folders (lasagna train's out_dir)")
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {r["step"]: {k: r[k] for k in keys} for r in rows if all(k in r for k in keys)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="training run folders")
    ap.add_argument("--every", type=int, default=250, help="steps per window (default 250)")
    ap.add_argument("--keys", nargs="+", default=["dice", "ce"], help="metrics.jsonl keys (default: dice ce)")
    args = ap.parse_args(argv)
    if args.every <= 0:
        ap.error(f"--every must be positive, got {args.every}")
    curves = {str(run): curve(run, args.keys) for run in args.runs}
    last = max(max(c, default=0) for c in curves.values())
    for lo in range(0, last, args.every):
        cells = []
        for name, c in curves.items():
            window = [c[s] for s in c if lo < s <= lo + args.every]
            means = " ".join(f"{k} {np.mean([w[k] for w in window]):.3f}" for k in args.keys) if window else "-"
            cells.append(f"{name}: {means}")
        print(f"{lo + 1:6d}-{lo + args.every:6d}  " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
