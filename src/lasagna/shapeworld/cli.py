"""`lasagna shapeworld render|examples`: write scenes, label maps and annotations to disk.

render writes, per scene, NNNN.png (image), NNNN_label.png (uint8 class ids into the split's class list; void,
which ShapeWorld never has, would be 255 = LABEL_PNG_IGNORE, read back as IGNORE_LABEL by `lasagna metrics semseg`) and
NNNN_label_color.png (a visualisation), plus one objects.json with every scene's objects, stuff, referring
expressions (target instance ids), reasoning query and VQA turns. Every file is written under a temporary name
and renamed, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..atomic import write_atomic_file
from ..data.records import IGNORE_LABEL, LABEL_PNG_IGNORE
from .reasoning import reasoning_item
from .referring import referring_items
from .scene import Scene, scene
from .textures import MEAN_COLOURS
from .vocab import COLOURS, HELD_OUT, SHAPES, SPLITS, STUFF, classes
from .vqa import vqa_turns


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("shapeworld", help="ShapeWorld procedural scenes (training and test data)")
    actions = parser.add_subparsers(dest="shapeworld_action", metavar="ACTION", required=True)
    render = actions.add_parser("render", help="write scenes, label maps and objects.json to a folder")
    render.add_argument("--split", default="test", choices=SPLITS)
    render.add_argument("--n", type=int, default=8, help="number of scenes")
    render.add_argument("--start", type=int, default=0, help="first scene index")
    render.add_argument("--size", type=int, default=128, help="image side in pixels")
    render.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    render.set_defaults(func=_render_command)
    examples = actions.add_parser("examples", help="write the example pictures and class list of the docs/demo")
    examples.add_argument("--out", type=Path, default=Path("examples"), help="output folder")
    examples.set_defaults(func=_examples_command)


def _render_command(args: argparse.Namespace) -> int:
    if args.n < 0 or args.start < 0:
        raise ValueError(f"--n and --start must be >= 0, got --n {args.n} --start {args.start}")
    render_scenes(args.split, range(args.start, args.start + args.n), args.out, args.size)
    print(f"wrote {args.n} {args.split} scenes ({args.size}x{args.size}) and objects.json to {args.out}")
    return 0


def _examples_command(args: argparse.Namespace) -> int:
    paths = write_examples(args.out)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def render_scenes(split: str, indices: range, out: Path, size: int = 128) -> Path:
    """Write the images, labels and visualisations of `indices`, then objects.json; returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for index in tqdm(indices, desc=f"shapeworld {split}", unit="scene"):
        sc = scene(split, index, size)
        stem = f"{index:04d}"
        _write_png(out / f"{stem}.png", sc.image)
        _write_png(out / f"{stem}_label.png", label_png(sc.semantic))
        _write_png(out / f"{stem}_label_color.png", colorize(sc))
        records.append({"index": index, "image": f"{stem}.png", "label": f"{stem}_label.png", **describe(sc)})
    meta = {"split": split, "size": size, "classes": list(classes(split)), "held_out": list(HELD_OUT)}
    path = out / "objects.json"
    _write_bytes(path, json.dumps({**meta, "scenes": records}, indent=1).encode())
    return path


def label_png(label: np.ndarray) -> np.ndarray:
    """(H, W) int label map (class ids, IGNORE_LABEL for void) -> uint8 for a label PNG, void as LABEL_PNG_IGNORE.

    Class ids must fit below LABEL_PNG_IGNORE; a larger id is an error rather than a silently wrapped value.
    """
    label = np.asarray(label)
    void = label == IGNORE_LABEL
    ids = label[~void]
    if ids.size and (ids.min() < 0 or ids.max() >= LABEL_PNG_IGNORE):
        raise ValueError(
            f"class ids must be 0..{LABEL_PNG_IGNORE - 1} for an 8-bit label PNG, got {ids.min()}..{ids.max()}"
        )
    return np.where(void, LABEL_PNG_IGNORE, label).astype(np.uint8)


def describe(sc: Scene) -> dict:
    """JSON-ready annotations of a scene."""
    return {
        "stuff": list(sc.stuff),
        "objects": [o.to_dict() for o in sc.objects],
        "referring": [i.to_dict() for i in referring_items(sc)],
        "reasoning": reasoning_item(sc).to_dict(),
        "vqa": [list(t) for t in vqa_turns(sc)],
    }


def palette(split: str) -> np.ndarray:
    """(K, 3) uint8 visualisation colour per class: stuff by its texture colour, things by their colour, lighter
    or darker by shape so that two shapes of one colour differ."""
    rows = [MEAN_COLOURS[name] for name in STUFF]
    for name in classes(split)[len(STUFF) :]:
        colour, shape = name.split(" ")
        t = SHAPES.index(shape) / (len(SHAPES) - 1)
        rgb = np.asarray(COLOURS[colour], np.float64)
        rows.append(tuple(rgb * (1.25 - 0.6 * t) if t > 0.5 else rgb + (255 - rgb) * (0.5 - t) * 0.8))
    return np.clip(np.rint(np.asarray(rows)), 0, 255).astype(np.uint8)


def colorize(sc: Scene) -> np.ndarray:
    """(S, S, 3) uint8 label visualisation with black instance boundaries."""
    image = palette(sc.split)[sc.semantic]
    inst = sc.instances
    edge = np.zeros_like(inst, dtype=bool)
    edge[:, 1:] |= inst[:, 1:] != inst[:, :-1]
    edge[1:, :] |= inst[1:, :] != inst[:-1, :]
    image[edge] = 0
    return image


def write_examples(out: Path) -> list[Path]:
    """Two image|label pictures (test scenes 0 and 1, upscaled x2), one plain test scene with 3+ objects and 2+
    stuff regions (shapes.png) and a class list for it with about 5 present and 5 absent names."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in (0, 1):
        sc = scene("test", index)
        pair = np.concatenate([sc.image, colorize(sc)], axis=1).repeat(2, axis=0).repeat(2, axis=1)
        paths.append(out / f"shapeworld-test-{index}.png")
        _write_png(paths[-1], pair)
    sc = next(s for s in (scene("test", i) for i in range(500)) if len(s.objects) >= 3 and len(s.stuff) >= 2)
    paths.append(out / "shapes.png")
    _write_png(paths[-1], sc.image)
    names = list(dict.fromkeys(o.name for o in sc.objects))
    present = names[:3] + list(sc.stuff[:2])
    present += [n for n in names[3:] if len(present) < 5]
    rng = random.Random(0)
    absent = rng.sample([c for c in classes("test") if c not in set(names) | set(sc.stuff)], 5)
    listed = present + absent
    rng.shuffle(listed)
    paths.append(out / "shapes-classes.txt")
    _write_bytes(paths[-1], ("\n".join(listed) + "\n").encode())
    return paths


def _write_png(path: Path, array: np.ndarray) -> None:
    picture = Image.fromarray(np.ascontiguousarray(array))
    write_atomic_file(path, lambda tmp: picture.save(tmp, format="PNG"))


def _write_bytes(path: Path, data: bytes) -> None:
    write_atomic_file(path, lambda tmp: tmp.write_bytes(data))
