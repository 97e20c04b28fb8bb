"""Pictures of results: translucent mask overlays with a legend of present and absent classes, label colour maps.

Colours are stable: a class name always gets the same colour (from a hash of the name, not Python's salted
`hash`), in every image and every run. So a class's colour says nothing about the class: "red circle" may be drawn
in green. Every mask therefore carries its name on the picture, on its largest piece (`label_anchors`), in a dark box
that keeps it readable on any background. Text uses Pillow's built-in font only, so nothing is read from the system.
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
_LABEL_BG: Color = (20, 20, 20)
_LABEL_TEXT: Color = (255, 255, 255)
LABEL_CHARS = 40
"""Longest mask label drawn on the picture, in characters; longer names and queries are cut with "..."."""


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
    palette = np.concatenate([semantic_palette(num_classes), np.zeros((1, 3), np.uint8)])
    valid = (label >= 0) & (label < num_classes)
    return palette[np.where(valid, label, num_classes)]


def semantic_palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8: class i's colour in `semantic_colormap` and in label PNGs' palettes."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    colours = [_hsv(i * _GOLDEN, 0.65 + 0.15 * (i % 2), (1.0, 0.8, 0.6)[i % 3]) for i in range(num_classes)]
    return np.array(colours, dtype=np.uint8)


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


@dataclass(frozen=True)
class LabelAnchor:
    """Where a mask's name goes, in the mask's pixel frame: (x, y) a pixel of its largest 8-connected piece, where
    that piece is widest; `piece_box` = (x0, y0, x1, y1), inclusive, bounds that piece; `area` its pixels."""

    name: str
    x: float
    y: float
    piece_box: tuple[int, int, int, int]
    area: int


def _largest_piece_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(H, W) bool -> the horizontal runs (rows, starts, exclusive ends) of its largest 8-connected piece.

    Union-find over runs, so the Python loop is per run, not per pixel. Ties go to the piece met first in reading
    order. None for an empty mask.
    """
    h, w = mask.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    ends = np.nonzero(step == -1)[1]
    if not len(rows):
        return None
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    bounds = np.searchsorted(rows, np.arange(h + 1)).tolist()
    first, last = starts.tolist(), ends.tolist()
    for r in range(1, h):
        i, i_end, j, j_end = bounds[r - 1], bounds[r], bounds[r], bounds[r + 1]
        while i < i_end and j < j_end:
            if first[i] <= last[j] and first[j] <= last[i]:  # touching, diagonals included
                parent[find(j)] = find(i)
            if last[i] < last[j]:
                i += 1
            else:
                j += 1
    roots = np.array([find(i) for i in range(len(rows))])
    area = np.bincount(roots, weights=ends - starts)
    keep = roots == int(np.argmax(area))
    return rows[keep], starts[keep], ends[keep]


def label_anchors(masks: Sequence[tuple[str, np.ndarray]]) -> list[LabelAnchor | None]:
    """Per (name, (H, W) bool mask), where its label goes (`LabelAnchor`), or None for an empty mask.

    The anchor is the middle of the piece's longest row run (ties: the run nearest the piece's middle row), so it is
    always a pixel of the piece, at its centre for a convex shape.
    """
    anchors: list[LabelAnchor | None] = []
    for name, mask in masks:
        runs = _largest_piece_runs(np.asarray(mask, dtype=bool))
        if runs is None:
            anchors.append(None)
            continue
        rows, starts, ends = runs
        middle = (int(rows.min()) + int(rows.max())) / 2
        best = max(range(len(rows)), key=lambda k: (ends[k] - starts[k], -abs(rows[k] - middle), -k))
        box = (int(starts.min()), int(rows.min()), int(ends.max()) - 1, int(rows.max()))
        x = (int(starts[best]) + int(ends[best]) - 1) / 2
        anchors.append(LabelAnchor(name, x, float(rows[best]), box, int((ends - starts).sum())))
    return anchors


def query_labels(query: str, count: int) -> list[str]:
    """Names for the `count` masks of a query's answer: the query (cut to fit a label), numbered when several."""
    text = _shorten(" ".join(query.split()), LABEL_CHARS - 4)
    return [text] if count == 1 else [f"{text} #{i + 1}" for i in range(count)]


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
    labels: bool = True,
) -> Image.Image:
    """Draw (name, (H, W) bool mask) pairs over an (H, W, 3) uint8 image, with a legend panel on the right.

    The image is enlarged by an integer factor (nearest neighbour, so pixels stay square and masks stay aligned)
    until it is at least `min_height` pixels tall. Each mask is blended in its class colour with opacity `alpha`
    and outlined in that colour; later masks are drawn over earlier ones. With `labels`, each mask's name (cut to
    `LABEL_CHARS`) is written on or by its largest piece (`layout_labels`) in white on a dark box edged in its
    colour. The legend lists the present classes
    with filled swatches and, under an "absent" heading, the absent ones with hollow swatches, wrapping into more
    columns when needed. Returns an RGB image H * scale tall and W * scale plus the legend's width wide.
    """
    image = np.asarray(image)
    _check_inputs(image, masks)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    scale = overlay_scale(image.shape[0], min_height)
    out = image.repeat(scale, 0).repeat(scale, 1).astype(np.float32)
    line = max(1, round(image.shape[0] * scale / 300))
    for name, mask in masks:
        big = np.asarray(mask).repeat(scale, 0).repeat(scale, 1)
        color = np.array(class_color(name), dtype=np.float32)
        out[big] = out[big] * (1.0 - alpha) + color * alpha
        out[_outline(big, line)] = color
    picture = Image.fromarray(np.round(out).astype(np.uint8))
    if labels:
        _draw_labels(picture, layout_labels(masks, image.shape, min_height))
    legend = _legend_panel([name for name, _ in masks], list(absent), picture.height)
    canvas = Image.new("RGB", (picture.width + legend.width, picture.height), _PANEL_BG)
    canvas.paste(picture, (0, 0))
    canvas.paste(legend, (picture.width, 0))
    return canvas


@dataclass(frozen=True)
class Label:
    """A mask's name as drawn: `text` (cut to `LABEL_CHARS`) in `box` = (x0, y0, x1, y1), ends exclusive, in the
    overlay picture's frame (the image enlarged `overlay_scale` times); `anchor` is the mask's `LabelAnchor`."""

    text: str
    box: tuple[int, int, int, int]
    anchor: LabelAnchor


def overlay_scale(height: int, min_height: int = 512) -> int:
    """The integer factor `overlay` enlarges an image of `height` rows by: the least that reaches `min_height`."""
    return max(1, math.ceil(min_height / height))


def _label_font(picture_height: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(12, picture_height // 32))


def layout_labels(
    masks: Sequence[tuple[str, np.ndarray]], image_shape: tuple[int, ...], min_height: int = 512
) -> list[Label]:
    """Where `overlay` writes each non-empty mask's name, in mask order.

    A label that fits inside its largest piece's bounding box is centred on the piece's anchor; a larger one sits
    just above the piece (below it at the picture's top edge), so a small object stays visible. Labels are kept
    inside the picture and moved up or down, by their height, off the labels placed before them when a move allows.
    """
    scale = overlay_scale(image_shape[0], min_height)
    width, height = image_shape[1] * scale, image_shape[0] * scale
    font = _label_font(height)
    pad, gap = max(2, font.size // 4), max(1, font.size // 6)
    labels: list[Label] = []
    for anchor in label_anchors(masks):
        if anchor is None:
            continue
        text = _shorten(anchor.name, LABEL_CHARS)
        left, top, right, bottom = font.getbbox(text)
        bw, bh = right - left + 2 * pad, bottom - top + 2 * pad
        px0, py0, px1, py1 = (v * scale for v in anchor.piece_box)
        x0 = round((anchor.x + 0.5) * scale - bw / 2)
        if bw <= px1 + scale - px0 and bh <= py1 + scale - py0:
            y0 = round((anchor.y + 0.5) * scale - bh / 2)
        else:
            y0 = py0 - bh - gap if py0 - bh - gap >= 0 else py1 + scale + gap
        x0 = min(max(0, x0), max(0, width - bw))
        tries = [min(max(0, y0 + k * bh), max(0, height - bh)) for k in (0, -1, 1, -2, 2, -3, 3)]
        free = [y for y in tries if not any(_overlaps((x0, y, x0 + bw, y + bh), lab.box) for lab in labels)]
        y0 = (free or tries)[0]
        labels.append(Label(text, (x0, y0, x0 + bw, y0 + bh), anchor))
    return labels


def _draw_labels(picture: Image.Image, labels: list[Label]) -> None:
    """White text on a dark box edged in the mask's colour: readable on any background."""
    font = _label_font(picture.height)
    draw = ImageDraw.Draw(picture)
    for label in labels:
        x0, y0, x1, y1 = label.box
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=_LABEL_BG, outline=class_color(label.anchor.name), width=2)
        left, top, right, bottom = font.getbbox(label.text)
        inner_x, inner_y = (x0 + x1 - (right - left)) / 2 - left, (y0 + y1 - (bottom - top)) / 2 - top
        draw.text((inner_x, inner_y), label.text, font=font, fill=_LABEL_TEXT)


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


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
