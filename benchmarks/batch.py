"""Folder throughput: `lasagna segment` at batch 1 vs batch N over the same images, side by side.

    python benchmarks/batch.py [--model DIR] [--images 32] [--batch-size 8] [--classes 20] [--workers 2]
                               [--device cuda] [--threads 0]

Both runs go through the whole runner (`lasagna.infer.run.segment_images`: PNG files decoded and the encoders'
pixels computed by DataLoader workers, the model, result.json / label.png / overlay.png written per image) into two
temporary folders, after one warm-up image. It prints images/s of each and the ratio, then how far their answers
agree: images whose present sets are equal, and the share of label.png pixels that are equal (batching is the same
computation up to float rounding).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lasagna.api import Lasagna
from lasagna.infer.listing import find_images
from lasagna.infer.run import RunSpec, segment_images
from lasagna.shapeworld import ShapeWorldSemantic, classes


def run(api: Lasagna, items, out: Path, spec: RunSpec, batch_size: int, workers: int) -> float:
    """Seconds to segment `items` into `out` at `batch_size`."""
    start = time.perf_counter()
    segment_images(api.engine, items, out, spec, batch_size=batch_size, workers=workers, strict=True, progress=False)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def agreement(one: Path, other: Path, items) -> tuple[int, float]:
    """(images with the same present set, share of equal label.png pixels) between two output folders."""
    same_sets, equal, total = 0, 0, 0
    for item in items:
        a = json.loads((one / item.rel / "result.json").read_text())["classes"]
        b = json.loads((other / item.rel / "result.json").read_text())["classes"]
        same_sets += [c["present"] for c in a] == [c["present"] for c in b]
        with Image.open(one / item.rel / "label.png") as la, Image.open(other / item.rel / "label.png") as lb:
            equal += int((np.asarray(la) == np.asarray(lb)).sum())
            total += la.width * la.height
    return same_sets, equal / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="checkpoint folder (default: the embedded ShapeWorld model)")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--classes", type=int, default=20, help="names from ShapeWorld's test-open list (at most 70)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding images")
    ap.add_argument("--device", default="cpu", help="where the model runs, e.g. cuda (default: cpu)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    api = Lasagna.from_pretrained(args.model)
    api.model.to(args.device)
    names = list(classes("test-open"))[: args.classes]
    source = ShapeWorldSemantic("test-open")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        for i in range(args.images):
            Image.fromarray(source[i].load_image()).save(root / "images" / f"{i:03d}.png")
        items = find_images([str(root / "images")])
        spec = RunSpec(model=args.model or "embedded", classes=names, decoder=api.config.default_decoder)
        run(api, items[:1], root / "warm-up", spec, 1, 0)  # first-call costs stay out of the timings
        one = run(api, items, root / "batch-1", spec, 1, args.workers)
        many = run(api, items, root / f"batch-{args.batch_size}", spec, args.batch_size, args.workers)
        same, pixels = agreement(root / "batch-1", root / f"batch-{args.batch_size}", items)
    k = len(items)
    print(
        f"model: {args.model or 'embedded shapeworld-small'}; {k} ShapeWorld test-open images; {len(names)} classes; "
        f"device {args.device}, {next(api.model.parameters()).dtype}; torch threads {torch.get_num_threads()}; "
        f"{args.workers} decoding and preprocessing workers"
    )
    print(f"{'batch':>5} | {'images/s':>8} | {'ratio':>5} | same present sets | equal label pixels")
    print(f"{1:>5} | {k / one:>8.2f} | {1.0:>5.2f} | {'-':>17} | {'-':>18}")
    print(f"{args.batch_size:>5} | {k / many:>8.2f} | {one / many:>5.2f} | {f'{same}/{k}':>17} | {pixels:>18.4f}")


if __name__ == "__main__":
    main()
