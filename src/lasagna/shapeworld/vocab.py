"""ShapeWorld's names: colours, shapes, stuff, the held-out combinations, the splits and their class lists.

Class lists put the 6 stuff names first (ids 0..5 in every split), then the colour-shape names ("red circle",
colour then shape) in colour-major order. The open split's 12 held-out combinations never appear in a
train/val/test image, class list or text; `test-open` uses all 70 classes.
"""

from __future__ import annotations

import numbers
from functools import cache

COLOURS: dict[str, tuple[int, int, int]] = {
    # Saturated and far apart (>= 100 in RGB from each other), and far from the muted stuff textures.
    "red": (230, 25, 30),
    "orange": (255, 130, 0),
    "yellow": (255, 240, 0),
    "green": (30, 215, 50),
    "cyan": (0, 230, 230),
    "blue": (25, 55, 255),
    "purple": (150, 30, 215),
    "pink": (255, 110, 200),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "heart", "cross", "ring")
STUFF: tuple[str, ...] = ("sky", "grass", "water", "sand", "brick", "wood")

# Two "diagonals" of the colour x shape table, so each colour and each shape is held out once or twice.
HELD_OUT: tuple[str, ...] = (
    "red square",
    "orange triangle",
    "yellow star",
    "green hexagon",
    "cyan heart",
    "blue cross",
    "purple ring",
    "pink circle",
    "red hexagon",
    "orange heart",
    "yellow cross",
    "green ring",
)

SPLITS: tuple[str, ...] = ("train", "val", "test", "test-open")
SPLIT_LENGTHS: dict[str, int] = {"train": 100_000, "val": 500, "test": 500, "test-open": 500}
MAX_INDEX = 10_000_000
"""Scene indices of one split lie in [0, MAX_INDEX); a split's seeds are SPLIT_SEED_BASE[split] + index."""
SPLIT_SEED_BASE: dict[str, int] = {split: i * MAX_INDEX for i, split in enumerate(SPLITS)}

_PLURALS = {"cross": "crosses"}


def thing_name(colour: str, shape: str) -> str:
    """The class name of a colour-shape combination: colour then shape."""
    return f"{colour} {shape}"


def plural(shape: str) -> str:
    """English plural of a shape name ("cross" -> "crosses")."""
    return _PLURALS.get(shape, shape + "s")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown ShapeWorld split {split!r}; known: {list(SPLITS)}")
    return split


def is_open(split: str) -> bool:
    """Whether the split may show (and name) the held-out combinations."""
    return check_split(split) == "test-open"


def scene_seed(split: str, index: int) -> int:
    """The seed of scene `index` of `split`: splits own disjoint seed ranges."""
    check_split(split)
    if not isinstance(index, numbers.Integral) or not 0 <= index < MAX_INDEX:
        raise ValueError(f"ShapeWorld scene index must be an int in [0, {MAX_INDEX}), got {index!r}")
    return SPLIT_SEED_BASE[split] + int(index)


@cache
def combos(split: str) -> tuple[tuple[str, str], ...]:
    """The (colour, shape) pairs a split may show, colour-major."""
    held = set(HELD_OUT) if not is_open(split) else set()
    return tuple((c, s) for c in COLOURS for s in SHAPES if thing_name(c, s) not in held)


@cache
def classes(split: str) -> tuple[str, ...]:
    """The split's class list: stuff first, then colour-shape names; label ids index this tuple."""
    return STUFF + tuple(thing_name(c, s) for c, s in combos(split))


def class_id(split: str, name: str) -> int:
    """The label id of class `name` in `split`."""
    names = classes(split)
    if name not in names:
        raise KeyError(f"class {name!r} is not in ShapeWorld split {split!r}")
    return names.index(name)
