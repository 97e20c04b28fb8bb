"""`lasagna segment`: one image, a class list or a query -> result.json + overlay.png + a short summary."""

from __future__ import annotations

import json
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
    }


def run(args) -> int:
    from ..api import Lasagna, to_rgb
    from ..atomic import write_atomic_file
    from ..viz import overlay, query_labels

    image = to_rgb(args.image)
    model = Lasagna.from_pretrained(args.model)
    if args.query is not None:
        pred = model.segment(image, query=args.query)
        masks = list(zip(query_labels(args.query, len(pred.masks)), pred.masks, strict=True))
        absent = [] if masks else ["(no target)"]
    else:
        pred = model.segment(image, classes=read_classes(args), chunk_size=args.chunk_size, decoder=args.decoder)
        masks = [(c.name, c.mask) for c in pred.classes if c.present]
        absent = pred.absent
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result_json(pred, str(args.image)), indent=1) + "\n"
    write_atomic_file(out / "result.json", lambda tmp: tmp.write_text(text))
    picture = overlay(image, masks, absent)
    write_atomic_file(out / "overlay.png", lambda tmp: picture.save(tmp, format="PNG"))
    if args.query is not None:
        print(f"answer: {pred.text}")
        print(f"{len(pred.masks)} mask(s)")
    else:
        for c in pred.classes:
            state = f"present  area {int(c.mask.sum()):>7d}" if c.present else "absent"
            print(f"  {c.name:<24s} {state:<22s} p={c.score:.2f}")
    print(f"wrote {out / 'result.json'} and {out / 'overlay.png'}")
    return 0
