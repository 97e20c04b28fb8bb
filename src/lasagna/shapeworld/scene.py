"""One ShapeWorld scene: a pure function of (split, index, size), rendered once and cached.

A scene is 1-3 horizontal stuff bands (sky on top when present) and 0-7 flat-coloured shapes with a thin darker
inner outline. Objects are drawn in order, so later ones occlude earlier ones; an object that would keep less
than `MIN_VISIBLE` of its own area is dropped before drawing, so every listed object is really visible. The image,
the semantic map and the instance map are written by the same masks, so labels are pixel-exact.
"""

from __future__ import annotations

import math
import numbers
import random
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .geometry import MAX_ROTATION, Raster, outline, rasterise
from .textures import TEXTURES, band_map, sample_bands
from .vocab import COLOURS, HELD_OUT, STUFF, class_id, classes, combos, is_open, scene_seed, thing_name

OBJECT_COUNT_WEIGHTS = (4, 12, 16, 17, 16, 14, 11, 10)
"""Relative odds of drawing 0..7 objects (before occlusion drops a few)."""
STUFF_COUNT_WEIGHTS = (20, 45, 35)
"""Relative odds of 1..3 stuff bands."""
RADIUS_RANGE = (0.06, 0.17)
"""Object extent radius as a fraction of the image size, drawn log-uniformly so sizes differ clearly."""
MIN_VISIBLE = 0.6
"""An object must keep this fraction of its own pixels visible, or it is dropped."""
MIN_STUFF = 0.04
"""Each stuff band should keep this fraction of the image visible; layouts that fail are redrawn."""
OUTLINE_DARKEN = 0.55
MIN_SIZE = 32
_MAX_TRIES = 12


@dataclass(frozen=True)
class SceneObject:
    """A visible object. Pixel coordinates: x to the right, y down, pixel centres at +0.5.

    bbox is (x0, y0, x1, y1) of the visible pixels with x1, y1 exclusive; area and centroid count visible pixels
    only; full_area is the unoccluded shape's pixel count (what "large"/"small" compare).
    """

    instance_id: int
    colour: str
    shape: str
    bbox: tuple[int, int, int, int]
    area: int
    centroid: tuple[float, float]
    full_area: int
    radius: float
    angle: float

    @property
    def name(self) -> str:
        return thing_name(self.colour, self.shape)

    def to_dict(self) -> dict:
        return {
            "instance_id": self.instance_id,
            "name": self.name,
            "colour": self.colour,
            "shape": self.shape,
            "bbox": list(self.bbox),
            "area": self.area,
            "centroid": [round(self.centroid[0], 2), round(self.centroid[1], 2)],
            "full_area": self.full_area,
        }


@dataclass(frozen=True)
class Scene:
    """A rendered scene; arrays are read-only (they are shared through the cache).

    image (S, S, 3) uint8 RGB; semantic (S, S) int64 ids into `classes(split)` (every pixel labelled, no ignore);
    instances (S, S) int32, 0 for stuff, else the `instance_id` of the object (1..N in drawing order).
    stuff lists the visible stuff names top to bottom.
    """

    split: str
    index: int
    size: int
    image: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray
    objects: tuple[SceneObject, ...]
    stuff: tuple[str, ...]

    @property
    def classes(self) -> tuple[str, ...]:
        return classes(self.split)

    def instance_mask(self, instance_id: int) -> np.ndarray:
        """(S, S) bool visible pixels of one object."""
        return self.instances == instance_id

    def stuff_mask(self, name: str) -> np.ndarray:
        """(S, S) bool visible pixels of one stuff class."""
        return self.semantic == class_id(self.split, name)


@dataclass(frozen=True)
class _Draft:
    colour: str
    shape: str
    radius: float
    angle: float
    raster: Raster


def scene(split: str, index: int, size: int = 128) -> Scene:
    """Scene `index` of `split` at `size` x `size` pixels (cached, so loaders of one scene render it once)."""
    scene_seed(split, index)  # validates split and index
    if not isinstance(size, numbers.Integral) or size < MIN_SIZE:
        raise ValueError(f"ShapeWorld image size must be an int >= {MIN_SIZE}, got {size!r}")
    # Plain ints, so numpy integers and Python ints share cache entries (and records stay readable).
    return _cached_scene(split, int(index), int(size))


@lru_cache(maxsize=64)
def _cached_scene(split: str, index: int, size: int) -> Scene:
    seed = scene_seed(split, index)
    rng = random.Random(seed)
    for attempt in range(_MAX_TRIES):
        order = sample_bands(rng, tuple(rng.sample(STUFF, _weighted(rng, STUFF_COUNT_WEIGHTS) + 1)))
        bands = band_map(rng, len(order), size)
        # The last try puts a held-out object on top, where occlusion cannot drop it.
        kept = _occlude(_sample_objects(rng, split, size, held_on_top=attempt == _MAX_TRIES - 1), size)
        covered = np.zeros((size, size), dtype=bool)
        for d in kept:
            covered[d.raster.window] |= d.raster.mask
        stuff_px = np.bincount(bands[~covered], minlength=len(order))
        stuff_ok = bool((stuff_px >= MIN_STUFF * size * size).all())
        held_ok = not is_open(split) or any(thing_name(d.colour, d.shape) in HELD_OUT for d in kept)
        if held_ok and stuff_ok:
            break
    return _compose(split, index, size, seed, order, bands, kept)


def _weighted(rng: random.Random, weights: tuple[int, ...]) -> int:
    return rng.choices(range(len(weights)), weights=weights)[0]


def _sample_objects(rng: random.Random, split: str, size: int, held_on_top: bool) -> list[_Draft]:
    """Draw 0-7 objects (1-7 with one held-out combination in the open split), bottom to top."""
    allowed = combos(split)
    weights = OBJECT_COUNT_WEIGHTS[1:] if is_open(split) else OBJECT_COUNT_WEIGHTS
    n = _weighted(rng, weights) + (1 if is_open(split) else 0)
    held_at = (n - 1 if held_on_top else rng.randrange(n)) if is_open(split) else -1
    drafts: list[_Draft] = []
    for i in range(n):
        pick = rng.random()
        if i == held_at:
            colour, shape = rng.choice(HELD_OUT).split(" ")
        elif drafts and pick < 0.25:  # repeat a shape or a colour, so "all the stars", "the left star" have work
            prev = rng.choice(drafts)
            pool = [cs for cs in allowed if (cs[1] == prev.shape if pick < 0.15 else cs[0] == prev.colour)]
            colour, shape = rng.choice(pool)
        else:
            colour, shape = rng.choice(allowed)
        lo, hi = (math.log(r * size) for r in RADIUS_RANGE)
        radius = math.exp(rng.uniform(lo, hi))
        cx, cy = (rng.uniform(radius + 1, size - radius - 1) for _ in range(2))
        angle = rng.uniform(-MAX_ROTATION[shape], MAX_ROTATION[shape])
        drafts.append(_Draft(colour, shape, radius, angle, rasterise(shape, cx, cy, radius, angle, size)))
    return drafts


def _occlude(drafts: list[_Draft], size: int) -> list[_Draft]:
    """Drop objects left too hidden by the ones above them; top-down, so a drop only ever un-hides others."""
    covered = np.zeros((size, size), dtype=bool)
    kept = []
    for d in reversed(drafts):
        window, mask = d.raster.window, d.raster.mask
        if np.count_nonzero(mask & ~covered[window]) >= MIN_VISIBLE * d.raster.area:
            kept.append(d)
            covered[window] |= mask
    return kept[::-1]


def _compose(
    split: str, index: int, size: int, seed: int, order: tuple[str, ...], bands: np.ndarray, kept: list[_Draft]
) -> Scene:
    image = np.empty((size, size, 3), dtype=np.float32)
    for b, name in enumerate(order):
        # Each texture has its own stream, so a band looks the same whichever other bands share the scene.
        texture = TEXTURES[name](np.random.default_rng([seed, 1, STUFF.index(name)]), size)
        np.copyto(image, texture, where=(bands == b)[..., None])
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)  # round half up, then truncate
    semantic = np.asarray([class_id(split, name) for name in order], dtype=np.int64)[bands]
    instances = np.zeros((size, size), dtype=np.int32)
    width = max(1, round(size / 128))
    for i, d in enumerate(kept, start=1):
        window, mask = d.raster.window, d.raster.mask
        rgb = np.asarray(COLOURS[d.colour], dtype=np.uint8)
        image[window][mask] = rgb
        image[window][outline(mask, width)] = np.rint(rgb * OUTLINE_DARKEN).astype(np.uint8)
        semantic[window][mask] = class_id(split, thing_name(d.colour, d.shape))
        instances[window][mask] = i
    objects = tuple(_describe(i, d, instances[d.raster.window] == i) for i, d in enumerate(kept, start=1))
    visible = np.bincount(bands[instances == 0], minlength=len(order))
    stuff = tuple(name for name, px in zip(order, visible, strict=True) if px > 0)
    for array in (image, semantic, instances):
        array.flags.writeable = False
    return Scene(split, index, size, image, semantic, instances, objects, stuff)


def _describe(instance_id: int, d: _Draft, visible: np.ndarray) -> SceneObject:
    """`visible` is the object's window of the instance map; coordinates are shifted back to the image."""
    rows, cols = np.nonzero(visible)
    rows, cols = rows + d.raster.y0, cols + d.raster.x0
    return SceneObject(
        instance_id=instance_id,
        colour=d.colour,
        shape=d.shape,
        bbox=(int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1),
        area=int(rows.size),
        centroid=(float(cols.mean()) + 0.5, float(rows.mean()) + 0.5),
        full_area=d.raster.area,
        radius=d.radius,
        angle=d.angle,
    )
