"""Shape rasterisation: one boolean mask per shape, pixel-exact and shared by the image and the labels.

Frame: pixel (row, col) covers [col, col+1) x [row, row+1); it belongs to a shape when its centre (col + 0.5,
row + 0.5) is inside. Shapes live in a unit frame (extent radius 1, y down) scaled by `radius` pixels, rotated by
`angle` degrees (clockwise on screen) and centred at (cx, cy) pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Rotation range per shape, degrees: hearts and crosses stay near upright so they keep reading as a heart and a
# plus sign (a cross turned 45 degrees is an "x"); the others are recognisable at any angle.
MAX_ROTATION: dict[str, float] = {
    "circle": 0.0,
    "ring": 0.0,
    "square": 45.0,
    "triangle": 180.0,
    "star": 180.0,
    "hexagon": 30.0,
    "heart": 25.0,
    "cross": 20.0,
}
RING_INNER = 0.55
"""Inner radius of a ring, as a fraction of its outer radius."""


def _regular(n: int, radius: float, phase_deg: float) -> np.ndarray:
    a = np.deg2rad(phase_deg + 360.0 * np.arange(n) / n)
    return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)


def _star(points: int, outer: float, inner: float) -> np.ndarray:
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    a = np.deg2rad(-90.0 + 180.0 * np.arange(2 * points) / points)
    return np.stack([radii * np.cos(a), radii * np.sin(a)], axis=1)


def _plus(half_width: float, half_length: float) -> np.ndarray:
    w, h = half_width, half_length
    return np.array(
        [(w, -h), (w, -w), (h, -w), (h, w), (w, w), (w, h), (-w, h), (-w, w), (-h, w), (-h, -w), (-w, -w), (-w, -h)]
    )


# Vertex lists in the unit frame (y down, so a phase of -90 degrees points up).
POLYGONS: dict[str, np.ndarray] = {
    "square": _regular(4, 1.0, 45.0) * 0.95,
    "triangle": _regular(3, 1.0, -90.0),
    "hexagon": _regular(6, 1.0, 0.0),
    "star": _star(5, 1.0, 0.48),
    "cross": _plus(0.33, 0.95),
}


def _inside_polygon(x: np.ndarray, y: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over points; loops over the (few) edges only."""
    inside = np.zeros(x.shape, dtype=bool)
    xj, yj = verts[-1]
    for xi, yi in verts:
        crosses = (yi > y) != (yj > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cut = (xj - xi) * (y - yi) / (yj - yi) + xi
        inside ^= crosses & (x < x_cut)
        xj, yj = xi, yi
    return inside


def _inside_unit(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if shape in POLYGONS:
        return _inside_polygon(u, v, POLYGONS[shape])
    r2 = u * u + v * v
    if shape == "circle":
        return r2 <= 0.92**2
    if shape == "ring":
        return (r2 <= 1.0) & (r2 >= RING_INNER**2)
    if shape == "heart":
        # The classic sextic heart (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 (y up), shrunk and shifted into the unit disc.
        x, y = u * 1.2, -v * 1.2 + 0.12
        return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0
    raise ValueError(f"unknown ShapeWorld shape {shape!r}; known: {[*POLYGONS, 'circle', 'ring', 'heart']}")


@dataclass(frozen=True)
class Raster:
    """A rasterised shape: `mask` is the window of the image starting at row y0, column x0."""

    y0: int
    x0: int
    mask: np.ndarray

    @property
    def window(self) -> tuple[slice, slice]:
        h, w = self.mask.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


def rasterise(shape: str, cx: float, cy: float, radius: float, angle: float, size: int) -> Raster:
    """One shape on a `size` x `size` image; only its bounding box (plus a 1 pixel margin) is evaluated."""
    x0, x1 = max(0, math.floor(cx - radius) - 1), min(size, math.ceil(cx + radius) + 1)
    y0, y1 = max(0, math.floor(cy - radius) - 1), min(size, math.ceil(cy + radius) + 1)
    xs = np.arange(x0, x1, dtype=np.float64) + 0.5 - cx
    ys = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5 - cy
    # Rotate screen offsets back into the unit frame.
    t = math.radians(angle)
    c, s = math.cos(t), math.sin(t)
    u = (c * xs + s * ys) / radius
    v = (-s * xs + c * ys) / radius
    return Raster(y0, x0, _inside_unit(shape, u, v))


def outline(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of `mask` within `width` 4-neighbour steps of its boundary (an inner outline)."""
    inner = mask
    for _ in range(width):
        padded = np.pad(inner, 1, constant_values=False)
        inner = inner & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner
