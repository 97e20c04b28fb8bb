"""Image preprocessing for the two encoders, from the checkpoint's PreprocessConfig (defined once, travels with it).

CLIP path: shortest edge -> clip_size (bicubic), centre crop, /255, normalise; wide images lose their sides, as in
the released model. SAM path: longest side -> sam_size (bilinear, sizes rounded half up), normalise in 0-255 space,
zero-pad bottom/right to a square; the resized (h', w') is returned so masks can be cropped back.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..config import PreprocessConfig


def check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{what}: expected an (H, W, 3) uint8 RGB array, got {desc}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{what}: empty image of shape {image.shape}")
    return image


def clip_pixels(image: np.ndarray, cfg: PreprocessConfig) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, clip_size, clip_size) float32."""
    h, w = image.shape[:2]
    size = cfg.clip_size
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BICUBIC))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    crop = resized[top : top + size, left : left + size]
    x = torch.tensor(crop).permute(2, 0, 1).float() / 255.0  # copies: inputs may be read-only
    mean = torch.tensor(cfg.clip_mean)[:, None, None]
    std = torch.tensor(cfg.clip_std)[:, None, None]
    return (x - mean) / std


def sam_resize_shape(h: int, w: int, size: int) -> tuple[int, int]:
    scale = size / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def sam_pixels(image: np.ndarray, cfg: PreprocessConfig) -> tuple[torch.Tensor, tuple[int, int]]:
    """(H, W, 3) uint8 -> ((3, sam_size, sam_size) float32 zero-padded, (h', w') resized size)."""
    h, w = image.shape[:2]
    new_h, new_w = sam_resize_shape(h, w, cfg.sam_size)
    if (new_h, new_w) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))
    x = torch.tensor(image).permute(2, 0, 1).float()
    x = (x - torch.tensor(cfg.sam_mean)[:, None, None]) / torch.tensor(cfg.sam_std)[:, None, None]
    out = torch.zeros(3, cfg.sam_size, cfg.sam_size)
    out[:, :new_h, :new_w] = x
    return out, (new_h, new_w)
