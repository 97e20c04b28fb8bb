"""Shared test builders (fixtures live in conftest.py)."""

from __future__ import annotations

import torch

from lasagna.config import preset
from lasagna.model.lasagna import LasagnaInputs
from lasagna.tokens import IMAGE_TOKEN_ID


def make_inputs(rows: list[list[int]], image_index: list[int], sizes: list[tuple[int, int]], ins_id: int = 10):
    """A hand-made batch; rows use IMAGE_TOKEN_ID for the image and 0 for padding."""
    length = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (length - len(r)) for r in rows])
    cfg = preset("tiny")
    g = torch.Generator().manual_seed(1)
    n_img = len(sizes)
    return LasagnaInputs(
        input_ids=ids,
        attention_mask=(ids != 0).long(),
        image_index=torch.tensor(image_index),
        clip_pixels=torch.randn(n_img, 3, cfg.preprocess.clip_size, cfg.preprocess.clip_size, generator=g),
        sam_pixels=torch.randn(n_img, 3, cfg.preprocess.sam_size, cfg.preprocess.sam_size, generator=g),
        resize_sizes=[(cfg.preprocess.sam_size, cfg.preprocess.sam_size)] * n_img,
        original_sizes=sizes,
        labels=ids.masked_fill((ids == 0) | (ids == IMAGE_TOKEN_ID), -100),
    )
