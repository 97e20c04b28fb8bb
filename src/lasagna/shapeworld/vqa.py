"""Visual questions with short answers: counts, colours, shapes, existence, stuff.

Each scene gets `TURNS` questions of different kinds, deterministic from (split, index). Counts are digits,
existence answers are "yes"/"no", the rest are single names from the vocabulary.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from .scene import Scene
from .vocab import COLOURS, SHAPES, STUFF, combos, plural, scene_seed, thing_name

TURNS = 3

Question = tuple[str, str]


def _count_shape(scene: Scene, rng: random.Random) -> Question:
    shape = rng.choice(SHAPES)
    n = sum(o.shape == shape for o in scene.objects)
    return f"How many {plural(shape)} are there?", str(n)


def _count_colour(scene: Scene, rng: random.Random) -> Question:
    colour = rng.choice(list(COLOURS))
    n = sum(o.colour == colour for o in scene.objects)
    return f"How many {colour} shapes are in the image?", str(n)


def _count_all(scene: Scene, rng: random.Random) -> Question:
    return rng.choice(("How many shapes are there?", "How many objects are in the picture?")), str(len(scene.objects))


def _colour_of(scene: Scene, rng: random.Random) -> Question | None:
    unique = [o for o in scene.objects if sum(p.shape == o.shape for p in scene.objects) == 1]
    if not unique:
        return None
    obj = rng.choice(unique)
    return f"What colour is the {obj.shape}?", obj.colour


def _shape_of(scene: Scene, rng: random.Random) -> Question | None:
    unique = [o for o in scene.objects if sum(p.colour == o.colour for p in scene.objects) == 1]
    if not unique:
        return None
    obj = rng.choice(unique)
    return f"What shape is the {obj.colour} object?", obj.shape


def _exists(scene: Scene, rng: random.Random) -> Question:
    present = sorted({(o.colour, o.shape) for o in scene.objects})
    if present and rng.random() < 0.5:
        colour, shape = rng.choice(present)
    else:
        # combos() of a closed split leaves out the held-out names: they are never uttered, even to deny them.
        colour, shape = rng.choice(combos(scene.split))
    answer = "yes" if (colour, shape) in present else "no"
    return f"Is there a {thing_name(colour, shape)} in the image?", answer


def _stuff_exists(scene: Scene, rng: random.Random) -> Question:
    name = rng.choice(scene.stuff) if rng.random() < 0.5 else rng.choice(STUFF)
    return f"Is there any {name} in this picture?", "yes" if name in scene.stuff else "no"


def _stuff_top(scene: Scene, rng: random.Random) -> Question:
    return "What is at the top of the picture, behind the shapes?", scene.stuff[0]


_KINDS: tuple[Callable[[Scene, random.Random], Question | None], ...] = (
    _count_shape,
    _count_colour,
    _count_all,
    _colour_of,
    _shape_of,
    _exists,
    _stuff_exists,
    _stuff_top,
)


def vqa_turns(scene: Scene, turns: int = TURNS) -> tuple[Question, ...]:
    """`turns` (question, answer) pairs of distinct kinds that apply to the scene."""
    rng = random.Random(scene_seed(scene.split, scene.index) * 4 + 1)
    out: list[Question] = []
    for kind in rng.sample(_KINDS, len(_KINDS)):
        qa = kind(scene, rng)
        if qa is not None:
            out.append(qa)
        if len(out) == turns:
            break
    return tuple(out)
