"""Pictures of results: translucent mask overlays with a legend of present and absent classes, label colour maps.

Colours are stable: a class name always gets the same colour (from a hash of the name, not Python's salted
`hash`), in every image and every run. Text uses Pillow's built-in font only, so nothing is read from the system.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Color = tuple[int, int, int]
EntryKind = Literal["heading", "present", "absent", "note"]

_GOLDEN = 0.618033988749895
_PANEL_BG: Color = (255, 255, 255)
_TEXT: Color = (20, 20, 20)
_MUTED: Color = (120, 120, 120)


def _hsv(hue: float, sat: float, val: float) -> Color:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, sat, val)
    return round(r * 255), round(g * 255), round(b * 255)


def class_color(name: str) -> Color:
    """The RGB colour of a class name: saturated and bright enough to see on photos, deterministic across runs."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    hue = int.from_bytes(digest[:4], "big") / 2**32
    return _hsv(hue, 0.6 + 0.35 * digest[4] / 255, 0.75 + 0.25 * digest[5] / 255)


def semantic_colormap(label: np.ndarray, num_classes: int) -> np.ndarray:
    """(H, W) int label map -> (H, W, 3) uint8 RGB.

    Class i gets a colour from golden-ratio hue steps (neighbouring ids look different) with three brightness
    levels; values outside 0..num_classes-1 (ignore, unlabelled) are black.
    """
    label = np.asarray(label)
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"label must be an (H, W) integer map, got {label.dtype} of shape {label.shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    ids = np.arange(num_classes)
    palette = [_hsv(i * _GOLDEN, 0.65 + 0.15 * (i % 2), (1.0, 0.8, 0.6)[i % 3]) for i in ids]
    palette = np.array([*palette, (0, 0, 0)], dtype=np.uint8)
    valid = (label >= 0) & (label < num_classes)
    return palette[np.where(valid, label, num_classes)]


@dataclass(frozen=True)
class LegendEntry:
    """One line of the legend: its grid cell (column, row) and, for classes, the swatch colour."""

    kind: EntryKind
    text: str
    column: int
    row: int
    color: Color | None = None


def _shorten(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 3].rstrip() + "..."


def legend_layout(
    present: Sequence[str], absent: Sequence[str], rows_per_column: int, max_chars: int = 40
) -> list[LegendEntry]:
    """Legend lines in reading order: a "present (n)" heading and the present classes (first occurrence order,
    "(none)" if there are none), then, after a blank row, an "absent (n)" heading and the absent classes.

    Lines fill a column top-down and wrap to the next column after `rows_per_column` rows; a heading never ends a
    column and a blank row never starts one. Names longer than `max_chars` are cut with "...".
    """
    if rows_per_column < 2:
        raise ValueError(f"rows_per_column must be >= 2 (a heading and one name), got {rows_per_column}")
    present = list(dict.fromkeys(present))
    absent = list(dict.fromkeys(absent))
    lines: list[tuple[EntryKind | None, str, Color | None]] = [("heading", f"present ({len(present)})", None)]
    lines += [("present", name, class_color(name)) for name in present] or [("note", "(none)", None)]
    if absent:
        lines.append((None, "", None))  # blank row between the sections
        lines.append(("heading", f"absent ({len(absent)})", None))
        lines += [("absent", name, class_color(name)) for name in absent]
    entries: list[LegendEntry] = []
    column = row = 0
    for kind, text, color in lines:
        if kind is None:
            row += 1 if row else 0
            continue
        if row >= rows_per_column or (kind == "heading" and row >= rows_per_column - 1):
            column, row = column + 1, 0
        entries.append(LegendEntry(kind, _shorten(text, max_chars), column, row, color))
        row += 1
    return entries


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of `mask` within `width` pixels of its edge (4-neighbour erosion; image borders are not edges)."""
    inner = mask
    for _ in range(width):
        p = np.pad(inner, 1, mode="edge")
        inner = inner & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~inner


def _check_inputs(image: np.ndarray, masks: list[tuple[str, np.ndarray]]) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(
            f"image must be a non-empty (H, W, 3) uint8 RGB array, got {image.dtype} of shape {image.shape}"
        )
    for name, mask in masks:
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.shape != image.shape[:2]:
            raise ValueError(
                f"mask {name!r} must be a bool (H, W) = {image.shape[:2]} array, got {mask.dtype} {mask.shape}"
            )


def overlay(
    image: np.ndarray,
    masks: list[tuple[str, np.ndarray]],
    absent: Sequence[str] = (),
    alpha: float = 0.5,
    min_height: int = 512,
) -> Image.Image:
    """Draw (name, (H, W) bool mask) pairs over an (H, W, 3) uint8 image, with a legend panel on the right.

    The image is enlarged by an integer factor (nearest neighbour, so pixels stay square and masks stay aligned)
    until it is at least `min_height` pixels tall. Each mask is blended in its class colour with opacity `alpha`
    and outlined in that colour; later masks are drawn over earlier ones. The legend lists the present classes
    with filled swatches and, under an "absent" heading, the absent ones with hollow swatches, wrapping into more
    columns when needed. Returns an RGB image H * scale tall and W * scale plus the legend's width wide.
    """
    image = np.asarray(image)
    _check_inputs(image, masks)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    scale = max(1, math.ceil(min_height / image.shape[0]))
    out = image.repeat(scale, 0).repeat(scale, 1).astype(np.float32)
    line = max(1, round(image.shape[0] * scale / 300))
    for name, mask in masks:
        big = np.asarray(mask).repeat(scale, 0).repeat(scale, 1)
        color = np.array(class_color(name), dtype=np.float32)
        out[big] = out[big] * (1.0 - alpha) + color * alpha
        out[_outline(big, line)] = color
    picture = Image.fromarray(np.round(out).astype(np.uint8))
    legend = _legend_panel([name for name, _ in masks], list(absent), picture.height)
    canvas = Image.new("RGB", (picture.width + legend.width, picture.height), _PANEL_BG)
    canvas.paste(picture, (0, 0))
    canvas.paste(legend, (picture.width, 0))
    return canvas


def _legend_panel(present: list[str], absent: list[str], height: int) -> Image.Image:
    """The legend as its own image of the given height; as wide as its columns need."""
    size = max(12, height // 32)
    font = ImageFont.load_default(size=size)
    line_h, pad, gap = round(size * 1.45), size, size // 2
    rows = max(2, (height - 2 * pad) // line_h)
    entries = legend_layout(present, absent, rows)
    num_columns = max(e.column for e in entries) + 1
    col_w = [0] * num_columns
    for e in entries:
        indent = 0 if e.kind == "heading" else size + gap
        col_w[e.column] = max(col_w[e.column], indent + math.ceil(font.getlength(e.text)))
    col_x = [pad + sum(col_w[:c]) + 2 * pad * c for c in range(num_columns)]
    panel = Image.new("RGB", (col_x[-1] + col_w[-1] + pad, height), _PANEL_BG)
    draw = ImageDraw.Draw(panel)
    draw.line([(0, 0), (0, height - 1)], fill=(200, 200, 200), width=1)
    for e in entries:
        x, y = col_x[e.column], pad + e.row * line_h
        box = (x, y + (line_h - size) // 2, x + size - 1, y + (line_h + size) // 2 - 1)
        text_x = x if e.kind == "heading" else x + size + gap
        if e.kind == "present":
            draw.rectangle(box, fill=e.color, outline=_TEXT)
        elif e.kind == "absent":
            draw.rectangle(box, outline=e.color, width=max(2, size // 8))
        fill = _MUTED if e.kind in ("absent", "note") else _TEXT
        draw.text((text_x, y + line_h // 2), e.text, font=font, fill=fill, anchor="lm")
        if e.kind == "heading":
            underline_y = y + line_h - 2
            draw.line([(x, underline_y), (x + font.getlength(e.text), underline_y)], fill=_TEXT, width=1)
    return panel
