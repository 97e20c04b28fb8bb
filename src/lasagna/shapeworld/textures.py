"""Procedural "stuff" textures and the band layout they fill.

Every texture is (S, S, 3) float32 in [0, 255], drawn from an explicit `np.random.Generator`. Features (clouds,
bricks, planks, waves) scale with the image, so a scene looks alike at any size. The palettes are muted so the
saturated object colours stand apart from them (see `vocab.COLOURS`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
from PIL import Image

MEAN_COLOURS: dict[str, tuple[int, int, int]] = {
    # The base colour of each texture: also its colour in label visualisations.
    "sky": (150, 190, 235),
    "grass": (80, 130, 55),
    "water": (40, 90, 140),
    "sand": (215, 190, 140),
    "brick": (150, 85, 65),
    "wood": (150, 105, 65),
}


def _noise(rng: np.random.Generator, size: int, cells: int, aspect: tuple[int, int] = (1, 1)) -> np.ndarray:
    """(size, size) smooth value noise in about [0, 1]: a random (cells*ay, cells*ax) grid, bicubic-upsampled."""
    grid = rng.random((cells * aspect[0] + 1, cells * aspect[1] + 1), dtype=np.float32)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC))


def _fbm(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Three octaves of value noise: cloud-like detail at a few scales."""
    return 0.55 * _noise(rng, size, cells) + 0.3 * _noise(rng, size, 2 * cells) + 0.15 * _noise(rng, size, 4 * cells)


def _mix(a: np.ndarray | tuple, b: np.ndarray | tuple, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend from colour a (t=0) to colour b (t=1); t is (S, S) or broadcastable to it."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a + (b - a) * t[..., None]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates normalised to [0, 1): x varies along columns, y along rows."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    return t[None, :], t[:, None]


def sky(rng: np.random.Generator, size: int) -> np.ndarray:
    """Vertical blue gradient with soft white clouds."""
    _, y = _grid(size)
    base = _mix((95, 150, 225), (190, 215, 242), y)  # (S, 1, 3): broadcast against the clouds
    cloud = np.clip((_fbm(rng, size, 3) - 0.5) * 3.5, 0.0, 1.0)
    return base + (np.float32(248) - base) * (cloud * 0.9)[..., None]


def grass(rng: np.random.Generator, size: int) -> np.ndarray:
    """Noisy green with vertical blade streaks."""
    patches = _fbm(rng, size, 4) - 0.5
    blades = _noise(rng, size, 32, aspect=(1, 3)) - 0.5  # fine along x, stretched along y
    speck = rng.random((size, size), dtype=np.float32) - 0.5
    shade = patches * 40 + blades * 55 + speck * 25
    return np.asarray(MEAN_COLOURS["grass"], np.float32) + shade[..., None] * np.float32([0.5, 1.0, 0.35])


def water(rng: np.random.Generator, size: int) -> np.ndarray:
    """Deep blue-teal with wavy horizontal ripples and light crests."""
    x, y = _grid(size)
    warp = _fbm(rng, size, 3) * 2.0 + 0.35 * np.sin(2 * math.pi * (2.0 * x + rng.random()))
    crest = np.sin(2 * math.pi * (9.0 * y + warp)) * 0.5 + 0.5
    base = _mix((30, 75, 125), (55, 110, 160), _fbm(rng, size, 2))
    return base + (np.float32([150, 195, 220]) - base) * (crest**6 * 0.8)[..., None]


def sand(rng: np.random.Generator, size: int) -> np.ndarray:
    """Warm beige with soft dunes and dark/light speckles."""
    dunes = _fbm(rng, size, 3) - 0.5
    grain = rng.random((size, size), dtype=np.float32)
    img = np.asarray(MEAN_COLOURS["sand"], np.float32) + dunes[..., None] * 30
    img[grain < 0.05] = (165, 140, 100)
    img[grain > 0.97] = (245, 232, 200)
    return img


def brick(rng: np.random.Generator, size: int) -> np.ndarray:
    """Running-bond bricks, each its own tone, with light grey mortar lines."""
    x, y = _grid(size)
    rows = 8  # brick courses per image height
    row = np.floor(y * rows).astype(np.int64)
    xs = x * rows / 2 + 0.5 * (row % 2)  # bricks twice as wide as tall, alternate courses offset by half
    col = np.floor(xs).astype(np.int64)
    tone = rng.normal(0.0, 12.0, (rows + 1, rows // 2 + 2)).astype(np.float32)
    mortar_w = max(1, round(size / 100)) / size
    mortar = ((y * rows) % 1.0 < mortar_w * rows) | ((xs % 1.0) < mortar_w * rows / 2)
    fine = (rng.random((size, size), dtype=np.float32) - 0.5) * 18
    img = np.asarray(MEAN_COLOURS["brick"], np.float32) + (tone[row, col] + fine)[..., None]
    img[mortar] = np.asarray((195, 190, 180), np.float32) + fine[mortar][:, None] * 0.5
    return img


def wood(rng: np.random.Generator, size: int) -> np.ndarray:
    """Horizontal planks with wavy grain lines and dark seams."""
    x, y = _grid(size)
    planks = 5
    plank = np.floor(y * planks)
    warp = _noise(rng, size, 3) * 1.5 + plank * 0.37
    grain = np.sin(2 * math.pi * (y * planks * 6.0 + warp + 0.6 * x)) * 0.5 + 0.5
    img = _mix((120, 80, 45), (175, 125, 80), grain**2)
    seam = (y * planks) % 1.0 < max(1, round(size / 100)) / size * planks
    img[np.broadcast_to(seam, (size, size))] = (75, 48, 28)
    return img


TEXTURES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "sky": sky,
    "grass": grass,
    "water": water,
    "sand": sand,
    "brick": brick,
    "wood": wood,
}


def sample_bands(rng: random.Random, stuff: tuple[str, ...]) -> tuple[str, ...]:
    """Order the chosen stuff top to bottom: sky, if present, stays on top."""
    rest = [s for s in stuff if s != "sky"]
    rng.shuffle(rest)
    return (("sky",) if "sky" in stuff else ()) + tuple(rest)


def band_map(rng: random.Random, n_bands: int, size: int) -> np.ndarray:
    """(S, S) int64 band index per pixel: n_bands horizontal bands with gently wavy, tilted boundaries.

    Boundary means are evenly spread with jitter and the waves are small, so boundaries never cross and
    every band keeps at least a tenth of the image height at every column.
    """
    x, y = _grid(size)
    bands = np.zeros((size, size), dtype=np.int64)
    for k in range(1, n_bands):
        mean = k / n_bands + rng.uniform(-0.05, 0.05)
        tilt = rng.uniform(-0.08, 0.08)
        amp, freq, phase = rng.uniform(0.0, 0.03), rng.uniform(0.5, 2.5), rng.uniform(0, 2 * math.pi)
        boundary = mean + tilt * (x - 0.5) + amp * np.sin(2 * math.pi * freq * x + phase)
        bands += y >= boundary
    return bands
