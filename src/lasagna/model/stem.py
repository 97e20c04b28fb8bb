"""An optional convolutional patch embedding for image encoders trained from scratch.

CLIP and SAM cut the image into patches with one strided convolution (a linear map of each patch's pixels). Their
released weights learned that map on huge data; an encoder trained from scratch on a small budget learns shape far
more slowly through it than through a few small strided convolutions ("early convolutions", as in Xiao et al. 2021,
"Early Convolutions Help Transformers See Better"). A `ConvStem` takes the patch convolution's place: k stride-2 3x3
convolutions (each followed by GELU) and a 1x1 projection to the encoder width, so the output grid is unchanged
when the patch size is 2**k. The released models keep their own patch convolution (an empty stem).
"""

from __future__ import annotations

import torch
from torch import nn


class ConvStem(nn.Module):
    """(B, 3, S, S) -> (B, width, S / 2**k, S / 2**k), k = len(channels)."""

    def __init__(self, channels: list[int], width: int, patch_size: int, where: str):
        super().__init__()
        if not channels or 2 ** len(channels) != patch_size:
            raise ValueError(
                f"{where}.conv_stem {list(channels)}: k stride-2 convolutions shrink the image by 2**k, which must "
                f"equal the patch size {patch_size}"
            )
        layers: list[nn.Module] = []
        previous = 3
        for out in channels:
            layers += [nn.Conv2d(previous, out, 3, stride=2, padding=1), nn.GELU()]
            previous = out
        layers.append(nn.Conv2d(previous, width, 1))
        self.layers = nn.Sequential(*layers)

    @property
    def weight(self) -> torch.Tensor:
        # why: transformers' CLIP embeddings read `patch_embedding.weight.dtype` to cast the pixels
        return self.layers[0].weight

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.layers(pixels)

    def levels(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """The k activated maps before the projection, at strides 2, 4, ..., 2**k: (B, channels[j], S/2**(j+1), ...)."""
        maps, x = [], pixels
        for conv, act in zip(self.layers[:-1:2], self.layers[1::2], strict=True):
            x = act(conv(x))
            maps.append(x)
        return maps
