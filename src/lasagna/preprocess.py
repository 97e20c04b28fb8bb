"""The one image converter: any image input -> (H, W, 3) uint8 RGB, then the two encoders' pixels.

`to_rgb(image)` takes a path, a PIL image or a numpy array and applies one set of rules to all three: a file is
opened with Pillow (EXIF orientation applied unless `exif_transpose=False`), a PIL image is decoded to an array, and
the array rules below decide how its dtype and shape become RGB. The same content therefore gives the same RGB
whichever kind it arrives as.

Decoding PIL images (modes):
- `1`, `L`, `RGB`, `RGBA`, `I`, `I;16*` and `F` are read as the arrays they hold (bool, uint8, int32, uint16,
  float32) and follow the array rules; Pillow's own `convert("RGB")` is not used for them because it clips 16-bit,
  32-bit and float values to 0..255 without a word.
- 16-bit PGM files, which Pillow opens as mode `I` with values scaled to 0..65535, are 16-bit images (uint16).
- Every other mode (P, PA, LA, RGBX, RGBa, CMYK, YCbCr, LAB, HSV) is decoded by Pillow's `convert("RGB")`:
  palettes are expanded, alpha is dropped. A mode Pillow cannot convert (La) is refused, naming it.

Array rules (dtype):
- uint8: used as it is.
- bool (and mode `1`): bilevel; False is 0, True is 255.
- uint16 (and the `I;16*` modes): 16-bit; scaled to 8 bits by round(v / 257) (65535 / 255 = 257).
- any other integer type (int8..int64, uint32, uint64, mode `I`): the values must lie in 0..255 and are used as
  8-bit values; anything outside is refused with the range found (give 16-bit data as uint16).
- float (float16/32/64, mode `F`): the values must lie in [0, 1] and become round(v * 255); values outside [0, 1]
  (such as 0..255 data in a float array: divide it by 255) are refused, and so are NaN and infinity, named.
- anything else (complex, object, strings) is refused, naming the dtype.
No value is ever wrapped modulo 256 or silently scaled down to black.

Array rules (shape): (H, W) and (H, W, 1) are grayscale, repeated over the three channels; (H, W, 3) is RGB;
(H, W, 4) is RGBA, whose alpha is dropped (the colour under it is kept). Any other shape ((H, W, 2), (H, W, 5), 1-D,
4-D) is refused with the shape in the message, and so is an empty image.

Size limit: an image with more than `max_pixels()` pixels (LASAGNA_MAX_PIXELS in the environment, default
89,478,485, Pillow's own decompression-bomb threshold) or a side longer than MAX_SIDE (65,535, JPEG's maximum) is
refused with ImageTooLargeError before it is decoded. Files are checked from their header, and Pillow's
DecompressionBombError becomes the same error; Pillow refuses files above 2 x PIL.Image.MAX_IMAGE_PIXELS on its
own, so reading larger files needs that setting raised too.

Encoder pixels, as the released model computes them:
- CLIP (`clip_pixels`): transformers 4.31's CLIPImageProcessor. The short side becomes `clip_size` and the long side
  int(clip_size * long / short), truncated (`clip_resize_shape`, in integers); bicubic resize (Pillow); centre crop
  with top = (h' - clip_size) // 2, left = (w' - clip_size) // 2; x * (1/255) in float64 cast to float32; then
  (x - mean) / std in float32. Wide images lose their sides. For ratios so extreme that the resized image would
  exceed 2**24 pixels (beyond 1024:1 at 128 px, 334:1 at 224 px), the long axis is resized and cropped before the
  short one: identical for wide images, as Pillow resizes horizontally first; for tall ones the two passes swap,
  which is identical on smooth content and off by up to about 25 grey levels on pixel noise.
- SAM (`sam_pixels`): ResizeLongestSide: (int(h * s + 0.5), int(w * s + 0.5)) with s = sam_size / max(h, w), at
  least 1 px each (`sam_resize_shape`); bilinear resize (Pillow); (x - mean) / std in 0..255 space; zero padding
  at the bottom and right to a square. The resized (h', w') is returned so masks are cropped back to it.

`prepare(image, cfg)` computes both once, into a `PreparedImage` that the engine takes in place of the array: the
pixel work can then run where the image is decoded (DataLoader workers in `lasagna segment`), with the same
functions, so the answers are the same.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import PreprocessConfig

if TYPE_CHECKING:
    import torch

MAX_PIXELS_ENV = "LASAGNA_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's default MAX_IMAGE_PIXELS: about 256 MiB as 24-bit RGB
MAX_SIDE = 65_535  # bounds the CLIP resize of extreme ratios to clip_size x 65,535 pixels
_FULL_RESIZE_PIXELS = 2**24  # above this, the CLIP resize keeps only the long axis' crop (see `_clip_crop`)

_ARRAY_MODES = frozenset({"1", "L", "RGB", "RGBA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})

T = TypeVar("T")


class ImageInputError(ValueError):
    """An image input that cannot be turned into RGB pixels; the message names the input and the problem."""


class ImageReadError(ImageInputError):
    """A file exists but cannot be decoded as the image or label it should be."""


class ImageTooLargeError(ImageInputError):
    """An image above the pixel limit (a decompression-bomb guard); the message says how to raise the limit."""


def max_pixels() -> int:
    """The pixel limit: LASAGNA_MAX_PIXELS from the environment (read at each call), else DEFAULT_MAX_PIXELS."""
    raw = os.environ.get(MAX_PIXELS_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(raw.replace("_", "").replace(",", ""))
    except ValueError:
        limit = 0
    if limit <= 0:
        raise ValueError(f"{MAX_PIXELS_ENV}={raw!r} is not a positive whole number of pixels")
    return limit


def check_size(height: int, width: int, what: str) -> None:
    """Refuse an empty image, one above the pixel limit, or one with a side longer than MAX_SIDE."""
    if height <= 0 or width <= 0:
        raise ImageInputError(f"{what}: empty image of size {height}x{width}")
    limit = max_pixels()
    if height * width > limit:
        raise ImageTooLargeError(
            f"{what}: {height}x{width} = {height * width:,} pixels is above the limit of {limit:,} pixels, a guard "
            f"against decompression bombs; set the environment variable {MAX_PIXELS_ENV} to a larger number to "
            "allow it"
        )
    if max(height, width) > MAX_SIDE:
        raise ImageTooLargeError(f"{what}: {height}x{width} has a side longer than {MAX_SIDE:,} pixels")


def check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Check that `image` is what the encoders take, an (H, W, 3) uint8 RGB array within the size limit."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ImageInputError(f"{what}: expected an (H, W, 3) uint8 RGB array, got {desc}")
    check_size(image.shape[0], image.shape[1], what)
    return image


def open_image_file(path: str | Path, use: Callable[[Image.Image], T], *, decode: bool = True) -> T:
    """Open the image file at `path`, check its header size against the limit, decode it unless `decode=False`,
    and return `use(image)`; every error names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.stat().st_size == 0:
        raise ImageReadError(f"image file {path} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # The size check below decides; Pillow's warning for the same images would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened as image:
            check_size(image.height, image.width, str(path))
            if decode:
                image.load()  # truncated or corrupt data only shows up when the pixels are decoded
            return use(image)
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(
            f"{path}: {err} To read it, raise PIL.Image.MAX_IMAGE_PIXELS and, if needed, {MAX_PIXELS_ENV}."
        ) from err
    except (ImageInputError, FileNotFoundError):
        raise
    except UnidentifiedImageError as err:  # why: Pillow's own message repeats the path
        raise ImageReadError(f"cannot decode image file {path}: not in an image format Pillow reads") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageReadError(f"cannot decode image file {path}: {err}") from err


def to_rgb(image: str | Path | Image.Image | np.ndarray, *, exif_transpose: bool = True) -> np.ndarray:
    """A path, PIL image or numpy array -> (H, W, 3) uint8 RGB, by the rules in the module docstring.

    `exif_transpose` applies the EXIF orientation of files and PIL images (arrays carry none); turn it off where
    annotations index the stored pixel grid."""
    if isinstance(image, str | Path):
        return open_image_file(image, lambda opened: _pil_to_rgb(opened, str(image), exif_transpose))
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image, "PIL image", exif_transpose)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, "image array")
    raise TypeError(f"image must be a path, PIL image or numpy array, got {type(image).__name__}")


def _pil_to_rgb(image: Image.Image, what: str, exif_transpose: bool) -> np.ndarray:
    check_size(image.height, image.width, what)
    what = f"{what} (mode {image.mode})"
    # Pillow opens 16-bit PGM as 32-bit mode I, its values scaled to 0..65535; the format is lost on transposing.
    sixteen_bit = image.mode == "I" and image.format == "PPM"
    try:
        if exif_transpose:
            image = ImageOps.exif_transpose(image)
        array = np.asarray(image if image.mode in _ARRAY_MODES else image.convert("RGB"))
    except ValueError as err:  # Pillow: "conversion from ... not supported"
        raise ImageInputError(f"{what}: cannot be converted to RGB ({err})") from err
    except OSError as err:
        raise ImageReadError(f"{what}: cannot decode it: {err}") from err
    return _array_to_rgb(array.astype(np.uint16) if sixteen_bit else array, what)


def _array_to_rgb(array: np.ndarray, what: str) -> np.ndarray:
    """The one place where a dtype and shape become RGB (module docstring, "Array rules")."""
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))):
        raise ImageInputError(
            f"{what}: expected shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.dtype} array of shape "
            f"{array.shape}"
        )
    check_size(array.shape[0], array.shape[1], f"{what} of shape {array.shape}")
    pixels = _to_uint8(array, what)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == 4:
        pixels = pixels[:, :, :3]
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels)


def _to_uint8(array: np.ndarray, what: str) -> np.ndarray:
    dtype, kind = array.dtype, array.dtype.kind
    if dtype == np.uint8:
        return array
    if kind == "b":
        return array.astype(np.uint8) * np.uint8(255)
    if kind == "u" and dtype.itemsize == 2:
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ImageInputError(
                f"{what}: {dtype} values span {low}..{high}, outside 0..255; integer images other than uint8 and "
                "uint16 must hold 8-bit values (scale them to 0..255, or give 16-bit data as uint16)"
            )
        return array.astype(np.uint8)
    if kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            nan = int(np.isnan(array).sum())
            raise ImageInputError(
                f"{what}: {dtype} array holds {nan} NaN and {array.size - int(finite.sum()) - nan} infinite values"
            )
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            hint = " (divide 8-bit values by 255)" if high <= 255 and low >= 0 else ""
            raise ImageInputError(
                f"{what}: float images must hold values in [0, 1], this {dtype} one spans [{low:g}, {high:g}]{hint}"
            )
        return np.floor(array.astype(np.float64) * 255 + 0.5).astype(np.uint8)
    raise ImageInputError(
        f"{what}: unsupported dtype {dtype}; expected uint8, uint16, bool, another integer type holding 0..255, "
        "or float in [0, 1]"
    )


def clip_resize_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """(h', w') of transformers 4.31's shortest-edge resize: the short side becomes `size`, the long side
    int(size * long / short). In integers, size * long // short: the float quotient of two integers below 2**53
    never rounds up to the next integer, so the two agree."""
    short, long = min(h, w), max(h, w)
    new_long = size * long // short
    return (size, new_long) if h <= w else (new_long, size)


def _clip_crop(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> the (size, size, 3) centre crop of its shortest-edge bicubic resize."""
    h, w = image.shape[:2]
    new_h, new_w = clip_resize_shape(h, w, size)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    if new_h * new_w <= _FULL_RESIZE_PIXELS:
        resized = Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BICUBIC)
        return np.asarray(resized)[top : top + size, left : left + size]
    # An extreme ratio: the resized image would hold size**2 * ratio pixels. Pillow resizes one axis at a time,
    # horizontal first, so resizing the long axis, cropping, then resizing the short one keeps the same pixels
    # (a tall image is transposed to be wide, which swaps the order of the two passes).
    tall = new_h > new_w
    source = Image.fromarray(image.transpose(1, 0, 2) if tall else image)
    short, new_long, offset = source.height, max(new_h, new_w), max(top, left)
    strip = source.resize((new_long, short), Image.Resampling.BICUBIC).crop((offset, 0, offset + size, short))
    crop = np.asarray(strip.resize((size, size), Image.Resampling.BICUBIC))
    return crop.transpose(1, 0, 2) if tall else crop


def clip_pixels(image: np.ndarray, cfg: PreprocessConfig) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, clip_size, clip_size) float32, normalised as transformers 4.31 does."""
    import torch  # why here: reading an image (`to_rgb`, before a model loads) must not pay for importing torch

    crop = _clip_crop(image, cfg.clip_size)
    x = (crop.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.asarray(cfg.clip_mean, np.float32)) / np.asarray(cfg.clip_std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def sam_resize_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """(h', w') of SAM's ResizeLongestSide, (int(h * s + 0.5), int(w * s + 0.5)) with s = size / max(h, w), in the
    released code's float arithmetic; each side at least 1 px, so 1x20000 images resize too."""
    scale = size / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def sam_pixels(image: np.ndarray, cfg: PreprocessConfig) -> tuple[torch.Tensor, tuple[int, int]]:
    """(H, W, 3) uint8 RGB -> ((3, sam_size, sam_size) float32 zero-padded, (h', w') resized size)."""
    import torch

    h, w = image.shape[:2]
    new_h, new_w = sam_resize_shape(h, w, cfg.sam_size)
    if (new_h, new_w) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))
    x = torch.tensor(image).permute(2, 0, 1).float()  # copies: inputs may be read-only
    x = (x - torch.tensor(cfg.sam_mean)[:, None, None]) / torch.tensor(cfg.sam_std)[:, None, None]
    out = torch.zeros(3, cfg.sam_size, cfg.sam_size)
    out[:, :new_h, :new_w] = x
    return out, (new_h, new_w)


@dataclass(frozen=True)
class PreparedImage:
    """An image with both encoders' pixels computed (`prepare`), under the `config` they were computed with.

    image: (H, W, 3) uint8 RGB, checked (`check_image`); clip: (3, clip_size, clip_size) float32 (`clip_pixels`);
    sam: (3, sam_size, sam_size) float32 zero-padded, and `resized` its (h', w') before padding (`sam_pixels`).
    The pixels stay tensors: from DataLoader workers, tensors travel through shared memory and the workers' pipe
    carries only their handles. Megabytes of arrays would fill that pipe, and a worker blocked writing to it never
    exits when the main process is killed (`kill -9` of a run left such workers behind in a test)."""

    image: np.ndarray
    clip: torch.Tensor
    sam: torch.Tensor
    resized: tuple[int, int]
    config: PreprocessConfig

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the original image: the size masks are brought back to."""
        return self.image.shape[0], self.image.shape[1]


def prepare(image: np.ndarray, cfg: PreprocessConfig, what: str = "image") -> PreparedImage:
    """(H, W, 3) uint8 RGB -> its `PreparedImage`; a bad array is refused by `check_image`, naming `what`."""
    image = check_image(image, what)
    sam, resized = sam_pixels(image, cfg)
    return PreparedImage(image, clip_pixels(image, cfg), sam, resized, cfg)
