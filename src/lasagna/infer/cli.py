"""`lasagna segment`: one image, a class list or a query -> result.json + overlay.png + a short summary."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("segment", help="segment an image with a class list or a referring/reasoning query")
    p.add_argument("image", help="image file (any format Pillow reads)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--classes", help='comma-separated class names, e.g. "sky, red circle, grass"')
    what.add_argument("--classes-file", help="a text file with one class name per line")
    what.add_argument("--query", help="a referring or reasoning query")
    p.add_argument("--model", help="checkpoint folder (default: the embedded ShapeWorld model)")
    p.add_argument("--out", default="segment-out", help="output folder (default: segment-out)")
    p.add_argument("--chunk-size", type=int, default=16, help="classes per chunk (default 16)")
    p.add_argument("--decoder", choices=["free", "template"], help="default: the checkpoint's choice")
    p.set_defaults(func=run)


def read_classes(args) -> list[str]:
    if args.classes is not None:
        names = [c.strip() for c in args.classes.split(",")]
    else:
        path = Path(args.classes_file)
        if not path.exists():
            raise FileNotFoundError(f"classes file not found: {path}")
        names = [line.strip() for line in path.read_text().splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise ValueError("the class list is empty")
    return names


def run(args) -> int:
    if not args.out.strip():
        raise ValueError("--out must name a folder, got an empty string")
    from ..api import Lasagna
    from ..preprocess import to_rgb
    from .outputs import write_image_outputs

    image = to_rgb(args.image)
    model = Lasagna.from_pretrained(args.model)
    if args.query is not None:
        pred = model.segment(image, query=args.query)
    else:
        with warnings.catch_warnings():  # why: printed once below, one line per name, not as Python warnings
            warnings.simplefilter("ignore", UserWarning)
            pred = model.segment(image, classes=read_classes(args), chunk_size=args.chunk_size, decoder=args.decoder)
    out = write_image_outputs(Path(args.out), image, pred, str(args.image), query=args.query)
    for warning in pred.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.query is not None:
        print(f"answer: {pred.text}")
        print(f"{len(pred.masks)} mask(s)")
    else:
        for c in pred.classes:
            state = f"present  area {int(c.mask.sum()):>7d}" if c.present else "absent"
            print(f"  {c.name:<24s} {state:<22s} p={c.score:.2f}")
    print(f"wrote {', '.join(str(p) for p in sorted(out.iterdir()))}")
    return 0
