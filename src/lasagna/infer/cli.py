"""`lasagna segment`: one image, a class list or a query -> result.json + overlay.png + a short summary."""

from __future__ import annotations

import json
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


def result_json(pred, image_path: str) -> dict:
    from .. import rle

    classes = [
        {
            "name": c.name,
            "present": c.present,
            "score": round(c.score, 4),
            "area": int(c.mask.sum()) if c.mask is not None else 0,
            "answered": c.answered,
            "llm_present": c.llm_present,
            "mask": rle.encode(c.mask) if c.mask is not None else None,
        }
        for c in pred.classes
    ]
    return {
        "image": image_path,
        "image_size": list(pred.image_size),
        "classes": classes,
        "masks": [rle.encode(m) for m in pred.masks],
        "answer": pred.text,
        "unmatched_names": pred.unmatched,
        "warnings": pred.warnings,
    }


OUTPUT_FILES = frozenset({"result.json", "overlay.png", "label.png"})
"""What an output folder of `lasagna segment` holds; it is replaced whole, so only these may be there."""


def write_outputs(out: Path, fill) -> Path:
    """Write an image's output files with `fill(folder)` and swap them into `out` together (a kill never leaves a
    new result beside an old overlay). `out` must be new, empty, or an earlier output folder: never a folder of
    the user's, whose other files the swap would remove."""
    from ..atomic import write_atomic_dir

    if out.exists():
        if not out.is_dir():
            raise NotADirectoryError(f"--out {out} is a file, not a folder")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OUTPUT_FILES)
        if foreign:
            raise FileExistsError(
                f"--out {out} holds files lasagna did not write ({', '.join(foreign[:3])}); name a new or empty folder"
            )
    return write_atomic_dir(out, fill, overwrite=True)


def run(args) -> int:
    if not args.out.strip():
        raise ValueError("--out must name a folder, got an empty string")
    from ..api import Lasagna
    from ..preprocess import to_rgb
    from ..viz import overlay, query_labels

    image = to_rgb(args.image)
    model = Lasagna.from_pretrained(args.model)
    if args.query is not None:
        pred = model.segment(image, query=args.query)
        masks = list(zip(query_labels(args.query, len(pred.masks)), pred.masks, strict=True))
        absent = [] if masks else ["(no target)"]
    else:
        with warnings.catch_warnings():  # why: printed once below, one line per name, not as Python warnings
            warnings.simplefilter("ignore", UserWarning)
            pred = model.segment(image, classes=read_classes(args), chunk_size=args.chunk_size, decoder=args.decoder)
        masks = [(c.name, c.mask) for c in pred.classes if c.present]
        absent = pred.absent
    text = json.dumps(result_json(pred, str(args.image)), indent=1) + "\n"
    picture = overlay(image, masks, absent)

    def fill(folder: Path) -> None:
        (folder / "result.json").write_text(text)
        picture.save(folder / "overlay.png", format="PNG")

    out = write_outputs(Path(args.out), fill)
    for warning in pred.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.query is not None:
        print(f"answer: {pred.text}")
        print(f"{len(pred.masks)} mask(s)")
    else:
        for c in pred.classes:
            state = f"present  area {int(c.mask.sum()):>7d}" if c.present else "absent"
            print(f"  {c.name:<24s} {state:<22s} p={c.score:.2f}")
    print(f"wrote {out / 'result.json'} and {out / 'overlay.png'}")
    return 0
