"""Masks on the wire: COCO run-length encoding through pycocotools.

An RLE is `{"size": [H, W], "counts": str}`: runs of 0s and 1s alternating, starting with 0s, over the mask read
in column-major order, written in COCO's compressed text form. `counts` is a str so the dict is JSON-ready.
`decode` also takes bytes counts and COCO's uncompressed form (a list of ints, as in `iscrowd` annotations).
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

_FIRST_CHAR, _LAST_CHAR = 48, 48 + 63


def encode(mask: np.ndarray) -> dict:
    """(H, W) bool mask -> {"size": [H, W], "counts": str}."""
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"mask must be bool (e.g. `logits > 0`), got dtype {mask.dtype}")
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _runs_from_text(counts: str) -> list[int]:
    """Run lengths of a compressed counts string (5-bit groups, continuation bit 0x20, deltas from run i-2)."""
    runs: list[int] = []
    value, shift = 0, 0
    for pos, ch in enumerate(counts):
        code = ord(ch)
        if not _FIRST_CHAR <= code <= _LAST_CHAR:
            raise ValueError(f"RLE counts: character {ch!r} at position {pos} is not a valid RLE character")
        code -= _FIRST_CHAR
        value |= (code & 0x1F) << shift
        shift += 5
        if code & 0x20:
            continue
        if code & 0x10:
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
        value, shift = 0, 0
    if shift:
        raise ValueError("RLE counts: the string ends in the middle of a number (truncated?)")
    return runs


def _check_runs(runs: list[int], height: int, width: int) -> None:
    if any(r < 0 for r in runs):
        raise ValueError("RLE counts: negative run length")
    if sum(runs) != height * width:
        raise ValueError(f"RLE counts: runs cover {sum(runs)} pixels but size {height}x{width} has {height * width}")


def decode(rle: dict) -> np.ndarray:
    """{"size": [H, W], "counts": str | bytes | list[int]} -> (H, W) bool mask. The runs must cover H*W pixels."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"an RLE must be a dict with 'size' and 'counts', got {type(rle).__name__}")
    size = rle["size"]
    if not (isinstance(size, list | tuple) and len(size) == 2 and all(isinstance(v, int) and v >= 0 for v in size)):
        raise ValueError(f"RLE size must be [H, W] with non-negative ints, got {size!r}")
    height, width = size
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if isinstance(counts, str):
        # pycocotools does not check that runs fill the mask (the rest would be uninitialised memory): check here.
        _check_runs(_runs_from_text(counts), height, width)
        coco = {"size": [height, width], "counts": counts.encode("ascii")}
    elif isinstance(counts, list) and all(isinstance(v, int) for v in counts):
        _check_runs(counts, height, width)
        coco = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    else:
        raise ValueError(f"RLE counts must be a str, bytes or list of ints, got {type(counts).__name__}")
    return mask_utils.decode(coco).astype(bool)
