"""Long class lists: seconds per image and peak memory from 10 to 10,000 classes, each size in a process of its own.

    python benchmarks/long_lists.py [--sizes 10,100,1000,10000] [--images 2] [--threads 1] [--decoder template]

The list is ShapeWorld's 70 names, then those names numbered ("red circle 1", ...) up to the size: names the embedded
model never learned, so its answers past the first 70 say nothing of its accuracy; this measures cost alone. Chunks
run `infer.decode.ROW_BATCH` at a time and masks `infer.engine.MASK_BATCH` at a time, so memory should stay flat and
time grow linearly. Peak memory is the process's peak resident set (model and Python included), read after the run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings


def class_names(n: int) -> list[str]:
    from lasagna.shapeworld import classes

    base = list(classes("test-open"))
    return [base[i % len(base)] + (f" {i // len(base)}" if i >= len(base) else "") for i in range(n)]


def measure(size: int, images: int, threads: int, decoder: str) -> dict:
    """One size, in this process: seconds per image (after a warm-up call) and the process's peak RSS."""
    import torch

    from lasagna.api import Lasagna
    from lasagna.shapeworld import ShapeWorldSemantic

    if threads:
        torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", message=".*is not among the")  # the numbered names, on purpose
    api = Lasagna.from_pretrained()
    source = ShapeWorldSemantic("test")
    names = class_names(size)
    api.segment(source[0].load_image(), classes=names[:10], decoder=decoder)
    start = time.perf_counter()
    present = [len(api.segment(source[i].load_image(), classes=names, decoder=decoder).present) for i in range(images)]
    seconds = (time.perf_counter() - start) / images
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return {"classes": size, "s_per_image": round(seconds, 3), "peak_rss_mb": round(peak_mb), "present": present}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,100,1000,10000", help="comma-separated list lengths")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: leave as is)")
    ap.add_argument("--decoder", choices=["template", "free"], default="template")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size, print JSON
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, args.images, args.threads, args.decoder)))
        return
    print(f"{'classes':>8} {'s/image':>9} {'peak RSS MB':>12}  present per image")
    for size in [int(s) for s in args.sizes.split(",")]:
        cmd = [sys.executable, __file__, "--one", str(size), "--images", str(args.images)]
        cmd += ["--threads", str(args.threads), "--decoder", args.decoder]
        row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        print(f"{row['classes']:>8} {row['s_per_image']:>9.3f} {row['peak_rss_mb']:>12}  {row['present']}", flush=True)


if __name__ == "__main__":
    main()
