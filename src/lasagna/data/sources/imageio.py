"""Image and label files to numpy arrays, with errors that name the file.

- `read_image(path)` -> (H, W, 3) uint8 RGB, whatever the file's mode: grayscale and bilevel are repeated over the
  three channels, palette images are expanded, alpha is dropped (the colour under it is kept), 16-bit grayscale is
  scaled to 8 bits. EXIF orientation is applied unless `exif_transpose=False`.
- `read_image_size(path)` -> (H, W) from the header only, with the same orientation rule.
- `read_label(path)` -> (H, W) raw integer values of a single-channel label file (uint8 for L / P / 1 PNGs, uint16 for
  16-bit PNG or TIFF, int32 for 32-bit); palette indices are returned as they are, never converted to colours.

Which frame to use: a label map or a COCO polygon indexes the *stored* pixel grid (the label file has the stored
size and no orientation tag), so sources with such annotations read images with `exif_transpose=False`; labelme
polygons (ReasonSeg) and plain photos (VQA) use the upright, EXIF-applied frame.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps

_EXIF_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the image by 90 degrees
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_LABEL_MODES = frozenset({"L", "P", "1", "I", *_SIXTEEN_BIT_MODES})

T = TypeVar("T")


class ImageReadError(ValueError):
    """A file exists but cannot be decoded as the image or label it should be."""


def _with_image(path: str | Path, use: Callable[[Image.Image], T], *, decode: bool = True) -> T:
    """Open `path`, decode it fully unless `decode=False`, and apply `use`; decoding errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            if decode:
                image.load()  # truncated or corrupt data only shows up when the pixels are decoded
            return use(image)
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageReadError(f"cannot decode image file {path}: {err}") from err


def _scale_16_to_8(values: np.ndarray) -> np.ndarray:
    """Map 0..65535 to 0..255 with rounding (65535 / 255 = 257)."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _to_rgb(image: Image.Image, path: Path) -> np.ndarray:
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageReadError(f"{path}: 32-bit image with values outside 0..65535 is not a supported photo")
        gray = _scale_16_to_8(values)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "F":
        raise ImageReadError(f"{path}: floating-point images are not supported, expected an 8- or 16-bit image")
    return np.array(image.convert("RGB"), dtype=np.uint8)


def read_image(path: str | Path, *, exif_transpose: bool = True) -> np.ndarray:
    """Read any image file to (H, W, 3) uint8 RGB; see the module docstring for the conversions."""

    def use(image: Image.Image) -> np.ndarray:
        upright = ImageOps.exif_transpose(image) if exif_transpose else image
        return _to_rgb(upright, Path(path))

    return _with_image(path, use)


def read_image_size(path: str | Path, *, exif_transpose: bool = True) -> tuple[int, int]:
    """(H, W) of the image that `read_image(path, exif_transpose=...)` would return, read from the header only."""

    def use(image: Image.Image) -> tuple[int, int]:
        width, height = image.size
        if exif_transpose and image.getexif().get(_EXIF_ORIENTATION_TAG) in _SWAPS_AXES:
            return width, height
        return height, width

    return _with_image(path, use, decode=False)


def read_label(path: str | Path) -> np.ndarray:
    """Read a single-channel label file to its (H, W) raw integer values (native byte order)."""

    def use(image: Image.Image) -> np.ndarray:
        if image.mode not in _LABEL_MODES:
            raise ImageReadError(
                f"{path}: label files must be single-channel (L, P, 16-bit or 32-bit integer), got mode {image.mode}"
            )
        values = np.asarray(image)
        if values.dtype == bool:
            return values.astype(np.uint8)
        return values.astype(values.dtype.newbyteorder("="), copy=False)

    return _with_image(path, use)
