"""Label files and image headers to numpy arrays and sizes, with errors that name the file.

Images themselves are read by `lasagna.preprocess.to_rgb(path, exif_transpose=...)`, the one converter for every
image input; this module holds what only the data sources need:
- `read_image_size(path)` -> (H, W) from the header only, with `to_rgb`'s orientation rule.
- `exif_orientation(path)` -> the EXIF orientation tag (1 when there is none).
- `read_label(path)` -> (H, W) raw integer values of a single-channel label file (uint8 for L / P / 1 PNGs, uint16 for
  16-bit PNG or TIFF, int32 for 32-bit); palette indices are returned as they are, never converted to colours. A
  JPEG file is refused, whatever its name: its lossy compression changes the ids along every edge.
Both open files through `preprocess.open_image_file`, so the pixel limit and its errors are the same as for images.

Which frame to use: a label map or a COCO polygon indexes the *stored* pixel grid (the label file has the stored
size and no orientation tag), so sources with such annotations read images with `exif_transpose=False`; labelme
polygons (ReasonSeg) and plain photos (VQA) use the upright, EXIF-applied frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lasagna.preprocess import ImageReadError, open_image_file

_EXIF_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the image by 90 degrees
_LOSSY_FORMATS = frozenset({"JPEG", "MPO"})  # MPO: the JPEG variant many phone cameras write
_LABEL_MODES = frozenset({"L", "P", "1", "I", "I;16", "I;16B", "I;16L", "I;16N"})


def read_image_size(path: str | Path, *, exif_transpose: bool = True) -> tuple[int, int]:
    """(H, W) of the image that `to_rgb(path, exif_transpose=...)` would return, read from the header only."""

    def use(image: Image.Image) -> tuple[int, int]:
        width, height = image.size
        if exif_transpose and image.getexif().get(_EXIF_ORIENTATION_TAG) in _SWAPS_AXES:
            return width, height
        return height, width

    return open_image_file(path, use, decode=False)


def exif_orientation(path: str | Path) -> int:
    """The EXIF orientation tag of an image file (1, upright as stored, when it has none), from the header only."""
    return open_image_file(path, lambda image: int(image.getexif().get(_EXIF_ORIENTATION_TAG, 1)), decode=False)


def read_label(path: str | Path) -> np.ndarray:
    """Read a single-channel label file to its (H, W) raw integer values (native byte order)."""

    def use(image: Image.Image) -> np.ndarray:
        if image.format in _LOSSY_FORMATS:  # why: blurred edges hold in-between values that can pass as class ids
            raise ImageReadError(
                f"{path}: a JPEG file; label files must be lossless (JPEG's lossy compression changes ids at every "
                "edge): save label maps as PNG"
            )
        if image.mode not in _LABEL_MODES:
            raise ImageReadError(
                f"{path}: label files must be single-channel (L, P, 16-bit or 32-bit integer), got mode {image.mode}"
            )
        values = np.asarray(image)
        if values.dtype == bool:
            return values.astype(np.uint8)
        return values.astype(values.dtype.newbyteorder("="), copy=False)

    return open_image_file(path, use)
