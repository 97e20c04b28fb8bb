"""Train and evaluate the five ablation rows (configs/ablation/*.yaml), in parallel processes, then tabulate.

    python tools/run_ablation.py --out runs/ablation [--steps 1500] [--limit 50] [--rows a-lisa,e-order]
        [--encoders runs/shapeworld-small/encoders.safetensors] [--decoder runs/shapeworld-small/decoder.safetensors]
        [--skip-done]

Every row starts from the same frozen image encoders and the same pretrained SAM decoder, made once by the default
model's stages 0 and 0b (`lasagna train --config configs/train/shapeworld-small.yaml` writes them), so rows differ
only in their text. docs/ablation.md has the rows, the protocol and the results.

Each row: `lasagna train --config configs/ablation/ROW.yaml out_dir=OUT/ROW optim.steps=STEPS`, then
`lasagna eval` on ShapeWorld `test` with the row's protocol below. Writes OUT/summary.json and OUT/summary.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lasagna.atomic import write_atomic_file

ROWS = ("a-lisa", "b-complex", "c-negatives", "d-random-list", "e-order")
# How each row is asked at test time: models trained on the full list are asked the full list (58 classes) in one
# query, as the released evaluation does; random-list models get 16-class chunks; only the order-consistent model
# can use template decoding; the LISA-style model is asked one class per query.
PROTOCOL = {
    "a-lisa": ["--single-class"],
    "b-complex": ["--chunk-size", "58", "--decoder", "free"],
    "c-negatives": ["--chunk-size", "58", "--decoder", "free"],
    "d-random-list": ["--chunk-size", "16", "--decoder", "free"],
    "e-order": ["--chunk-size", "16", "--decoder", "template"],
}


def lasagna(*args: str) -> list[str]:
    return [sys.executable, "-m", "lasagna.cli", *args]


def run_all(commands: dict[str, list[str]], logs: Path, what: str) -> dict[str, float]:
    """Start every command at once, wait for all; returns wall seconds per row; fails loudly on any error."""
    if not commands:
        return {}
    started, procs = {}, {}
    # why: N processes with torch's default thread count each oversubscribe the cores and crawl
    threads = str(max(1, (os.cpu_count() or 1) // len(commands)))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    for row, cmd in commands.items():
        log = (logs / f"{row}-{what}.log").open("w")
        started[row] = time.perf_counter()
        procs[row] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    seconds = {}
    # why: poll, so each row's time ends when that row ends, not when the rows before it in the dict do
    while procs:
        for row, (proc, log) in list(procs.items()):
            code = proc.poll()
            if code is None:
                continue
            seconds[row] = time.perf_counter() - started[row]
            log.close()
            del procs[row]
            if code != 0:
                for other, _ in procs.values():
                    other.terminate()
                raise SystemExit(f"{row} {what} failed with exit code {code}; see {logs / f'{row}-{what}.log'}")
        time.sleep(1.0)
    return seconds


def read_log(metrics: Path) -> dict[str, list[float]]:
    """A run's metrics.jsonl as {key: every value logged under it, in order}, read once."""
    logged: dict[str, list[float]] = {}
    for line in metrics.read_text().splitlines():
        for key, value in json.loads(line).items():
            logged.setdefault(key, []).append(value)
    return logged


def mean_tokens(logged: dict[str, list[float]]) -> float | None:
    values = logged.get("tokens", [])
    return sum(values) / len(values) if values else None


def train_seconds(logged: dict[str, list[float]]) -> float | None:
    """The run's own training time (optimizer steps only, summed over resumes)."""
    values = logged.get("seconds", [])
    return values[-1] if values else None


def _fmt(value: float | None, digits: int = 3) -> str:
    """A table cell: n/a for what a row did not log (a run without token counts, say)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/ablation", help="one folder per row, and the summary")
    ap.add_argument("--steps", type=int, default=1500, help="training steps per row")
    ap.add_argument("--limit", type=int, default=50, help="first N ShapeWorld test scenes each row is evaluated on")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows (default: all five)")
    ap.add_argument("--config-dir", default="configs/ablation", help="where ROW.yaml of each row is read")
    ap.add_argument("--encoders", default="runs/shapeworld-small/encoders.safetensors", help="stage 0's output")
    ap.add_argument("--decoder", default="runs/shapeworld-small/decoder.safetensors", help="stage 0b's output")
    ap.add_argument(
        "--skip-done", action="store_true", help="keep rows already trained (OUT/ROW/final) and evaluated (eval.json)"
    )
    args = ap.parse_args(argv)
    if not Path(args.encoders).is_file():
        raise SystemExit(f"encoder weights not found: {args.encoders}; run the default model's stage 0 first")
    if not Path(args.decoder).is_file():
        raise SystemExit(f"decoder weights not found: {args.decoder}; run the default model's stage 0b first")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; known: {list(ROWS)}")
    train = {
        r: lasagna(
            "train",
            "--config",
            f"{args.config_dir}/{r}.yaml",
            f"out_dir={out / r}",
            "--overwrite",  # why: a row trained again starts over, its earlier checkpoints would block the run
            f"optim.steps={args.steps}",
            f"encoders.from_file={args.encoders}",
            f"decoder.from_file={args.decoder}",
        )
        for r in rows
        if not (args.skip_done and (out / r / "final").is_dir())
    }
    run_all(train, out, "train")
    evals = {
        r: lasagna(
            "eval",
            "--model",
            str(out / r / "final"),
            "--dataset",
            "shapeworld",
            "--split",
            "test",
            "--limit",
            str(args.limit),
            "--tasks",
            "semantic",
            "--out",
            str(out / r / "eval.json"),
            *PROTOCOL[r],
        )
        for r in rows
        if not (args.skip_done and (out / r / "eval.json").is_file())
    }
    eval_s = run_all(evals, out, "eval")
    summary = []
    for r in rows:
        sem = json.loads((out / r / "eval.json").read_text())["semantic"]
        logged = read_log(out / r / "metrics.jsonl")
        summary.append(
            {
                "row": r,
                "steps": int(logged["step"][-1]),
                "mIoU": sem["mIoU"],
                "present_recall": sem["present_recall"],
                "absent_rejection": sem["absent_rejection"],
                "name_disagreements": sem["name_disagreements"],
                "mean_tokens": mean_tokens(logged),
                "train_seconds": train_seconds(logged),
                "eval_seconds": round(eval_s[r], 1) if r in eval_s else None,
                "eval_images": sem["images"],
                "protocol": " ".join(PROTOCOL[r]),
            }
        )
    write_atomic_file(out / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1) + "\n"))
    lines = [
        "| row | mIoU | present recall | absent rejection | name disagreements | mean tokens | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['row']} | {_fmt(s['mIoU'])} | {_fmt(s['present_recall'])} | {_fmt(s['absent_rejection'])} | "
            f"{s['name_disagreements']} | {_fmt(s['mean_tokens'], 0)} | {_fmt(s['train_seconds'], 0)} |"
        )
    write_atomic_file(out / "summary.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
