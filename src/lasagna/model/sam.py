"""SAM as LaSagnA uses it: image encoder once per image, one sparse prompt per `<ins>`, single-mask output.

Built from transformers' SAM parts. Coordinates: the encoder sees a (sam_size x sam_size) zero-padded square whose
top-left (h', w') region is the resized image; `postprocess` maps decoder logits back to the original (H, W).
With `stem_skips` (small presets trained from scratch) the decoder's upscaling also reads the conv stem's finer maps.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers.models.sam.configuration_sam import SamConfig as HFSamConfig
from transformers.models.sam.configuration_sam import SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig
from transformers.models.sam.modeling_sam import SamMaskDecoder, SamPromptEncoder, SamVisionEncoder

from ..config import SamConfig
from .stem import ConvStem


def hf_sam_config(cfg: SamConfig) -> HFSamConfig:
    vision = SamVisionConfig(
        hidden_size=cfg.hidden_size,
        output_channels=cfg.prompt_dim,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        mlp_dim=cfg.mlp_dim,
        window_size=cfg.window_size,
        global_attn_indexes=list(cfg.global_attn_indexes),
        num_pos_feats=cfg.prompt_dim // 2,
    )
    prompt = SamPromptEncoderConfig(
        hidden_size=cfg.prompt_dim,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        image_embedding_size=cfg.embedding_size,
    )
    decoder = SamMaskDecoderConfig(
        hidden_size=cfg.prompt_dim,
        mlp_dim=cfg.decoder_mlp_dim,
        num_hidden_layers=cfg.decoder_num_layers,
        num_attention_heads=cfg.decoder_num_heads,
        num_multimask_outputs=cfg.num_multimask_outputs,
        iou_head_hidden_dim=cfg.prompt_dim,
        layer_norm_eps=1e-5,  # SAM's decoder uses nn.LayerNorm defaults
    )
    config = HFSamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)
    config._attn_implementation = "sdpa"
    config.mask_decoder_config._attn_implementation = "sdpa"
    config.vision_config._attn_implementation = "sdpa"
    return config


def sincos_grid(size: int, dim: int) -> torch.Tensor:
    """(size, size, dim) 2-D sine-cosine position code: dim/4 frequencies each of sin x, cos x, sin y, cos y."""
    if dim % 4:
        raise ValueError(f"a 2-D sine-cosine code needs a width divisible by 4, got {dim}")
    freqs = 1.0 / 10000 ** (torch.arange(dim // 4) / (dim // 4))
    y, x = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    x, y = x[..., None] * freqs, y[..., None] * freqs
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=-1)


def decoder_attention(device: torch.device):
    """The attention kernels the mask decoder runs with on `device`.

    why: on CPU, torch's fused (flash) attention backward is slow for the decoder's shapes (a few prompt tokens
    against h x w cells): where gradients flow, the math kernel makes a shapeworld-small stage-1 step 1.2x and a
    stage-0b step 1.3x faster (`benchmarks/train_step.py`, b/c). Without gradients (inference) the fused kernel is
    the faster one: a 70-class answer of shapeworld-small runs 1.21x to 1.28x faster (`benchmarks/kernels.py`).
    Other devices keep torch's choice."""
    if device.type == "cpu" and torch.is_grad_enabled():
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


class StemSkips(nn.Module):
    """1x1 projections of the stem's maps at strides patch/2 and patch/4 onto the decoder's two upscaling steps.

    why: SAM's decoder draws masks from the encoder's grid alone (16 x 16 cells of 8 px for shapeworld-small), and a
    mask pooled to that grid and upsampled covers ShapeWorld's small shapes at IoU 0.67 at best (measured
    in docs/history.md). The stem's earlier maps keep the finer grids (32 x 32 and 64 x 64 there), and
    the upscaling adds them in, as HQ-SAM adds early encoder features. Zero-initialised, so a new model starts as
    plain SAM.
    """

    def __init__(self, cfg: SamConfig):
        super().__init__()
        if len(cfg.conv_stem) < 3:
            raise ValueError(
                f"sam.stem_skips needs a conv_stem of at least 3 convolutions (maps at strides patch/2 and patch/4), "
                f"got {list(cfg.conv_stem)}"
            )
        self.coarse = nn.Conv2d(cfg.conv_stem[-2], cfg.prompt_dim // 4, 1)  # stride patch/2: after upscale_conv1
        self.fine = nn.Conv2d(cfg.conv_stem[-3], cfg.prompt_dim // 8, 1)  # stride patch/4: after upscale_conv2
        for conv in (self.coarse, self.fine):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)


class SamSegmenter(nn.Module):
    """SAM image encoder + prompt encoder + mask decoder (+ optional stem skips into the decoder)."""

    def __init__(self, cfg: SamConfig):
        super().__init__()
        self.cfg = cfg
        hf = hf_sam_config(cfg)
        self.image_encoder = SamVisionEncoder(hf.vision_config)
        if cfg.conv_stem:
            self.image_encoder.patch_embed.projection = ConvStem(cfg.conv_stem, cfg.hidden_size, cfg.patch_size, "sam")
        with torch.no_grad():
            # why: SAM's code starts the absolute position embedding at zero, as its weights come pretrained; an
            # encoder trained from scratch then starts blind to where each patch lies. A fixed 2-D sine-cosine
            # start (as MAE's ViTs use) made a shapeworld-small encoder name object shapes sooner (object-pooled
            # 8-way shape accuracy 0.385 against 0.313 after 400 steps, docs/history.md). Loaded weights
            # replace it.
            pos = self.image_encoder.pos_embed
            pos.copy_(sincos_grid(pos.shape[1], pos.shape[-1]).to(pos.dtype)[None])
        self.prompt_encoder = SamPromptEncoder(hf)
        self.mask_decoder = SamMaskDecoder(hf.mask_decoder_config)
        self.stem_skips = StemSkips(cfg) if cfg.stem_skips else None

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(I, 3, S, S) normalised padded images -> (I, prompt_dim, S/patch, S/patch) embeddings."""
        return self.image_encoder(pixels).last_hidden_state

    def skip_maps(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(I, 3, S, S) -> the stem's maps at strides patch/2 and patch/4, or () without stem skips."""
        if self.stem_skips is None:
            return ()
        levels = self.image_encoder.patch_embed.projection.levels(pixels)
        return levels[-2], levels[-3]

    def image_pe(self) -> torch.Tensor:
        """(1, prompt_dim, h, w) dense positional encoding of the embedding grid (cell centres in [0, 1])."""
        size = self.cfg.embedding_size
        pe_layer = self.prompt_encoder.shared_embedding
        weight = pe_layer.positional_embedding
        centres = (torch.arange(size, device=weight.device, dtype=weight.dtype) + 0.5) / size
        y, x = torch.meshgrid(centres, centres, indexing="ij")
        grid = torch.stack([x, y], dim=-1)[None]  # (1, h, w, 2), x first as SAM expects
        return pe_layer(grid).permute(0, 3, 1, 2)

    def decode(
        self, image_embeddings: torch.Tensor, prompts: torch.Tensor, skips: tuple[torch.Tensor, ...] = ()
    ) -> torch.Tensor:
        """N prompts -> (N, 4h, 4w) low-resolution mask logits (mask token 0, no multimask).

        image_embeddings: (N, C, h, w), the image of each prompt, or (1, C, h, w), one image for all of them.
        prompts: (N, C) mask embeddings, each one sparse prompt token. skips: the images' `skip_maps`, batched as
        image_embeddings, required with stem skips. The dense prompt is SAM's learned "no mask" embedding.
        why: prompts of many images in one call (a batch of N, one prompt each) run the decoder's small layers once
        instead of once per image.
        """
        n = prompts.shape[0]
        _, c, h, w = image_embeddings.shape
        if n == 0:
            return image_embeddings.new_zeros((0, 4 * h, 4 * w))
        dtype = image_embeddings.dtype
        images = image_embeddings.expand(n, -1, -1, -1)
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, c, 1, 1).to(dtype).expand(n, c, h, w)
        sparse = prompts.to(dtype).reshape(n, 1, 1, c)
        pe = self.image_pe().to(dtype).expand(n, -1, -1, -1)
        if self.stem_skips is not None and len(skips) != 2:
            raise ValueError("this SAM has stem skips: decode needs the images' skip_maps")
        with decoder_attention(images.device):
            if self.stem_skips is not None:
                return self._decode_with_skips(images + dense, pe, sparse, skips)
            low_res, _iou = self.mask_decoder(
                image_embeddings=images,
                image_positional_embeddings=pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
        return low_res[:, 0, 0]

    def _decode_with_skips(
        self, images: torch.Tensor, pe: torch.Tensor, sparse: torch.Tensor, skips: tuple[torch.Tensor, ...]
    ) -> torch.Tensor:
        """SamMaskDecoder's single-mask path, its parts called in turn, with the stem's maps added while upscaling.

        images, pe: (N, C, h, w); sparse: (N, 1, 1, C), one prompt per batch row; skips broadcast over N."""
        dec = self.mask_decoder
        n, c, h, w = images.shape
        output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight]).to(sparse.dtype)
        tokens = torch.cat([output_tokens.expand(n, 1, -1, -1), sparse], dim=2)
        points, image = dec.transformer(
            point_embeddings=tokens,
            image_embeddings=images,
            image_positional_embeddings=pe,
            attention_similarity=None,
        )
        image = image.transpose(2, 3).reshape(n, c, h, w)
        coarse, fine = skips
        up = dec.activation(dec.upscale_layer_norm(dec.upscale_conv1(image)) + self.stem_skips.coarse(coarse))
        up = dec.activation(dec.upscale_conv2(up) + self.stem_skips.fine(fine))
        hyper = dec.output_hypernetworks_mlps[0](points[:, 0, 1])  # mask token 0 (index 0 is the IoU token)
        return torch.einsum("nc,nchw->nhw", hyper, up)

    def postprocess(
        self, low_res: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> torch.Tensor:
        """(N, h4, w4) low-res logits -> (N, H, W) float32 logits at the original image size.

        Upsample to the padded square, crop the resized region (h', w') = input_size, resize to original_size.
        """
        size = self.cfg.image_size
        masks = low_res.float()[:, None]
        masks = F.interpolate(masks, (size, size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        masks = F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)
        return masks[:, 0]

    def frame_masks(self, masks: torch.Tensor, input_size: tuple[int, int], low_size: tuple[int, int]) -> torch.Tensor:
        """(N, H, W) masks at the original size -> (N, *low_size) float32 share of each low-res cell they cover: the
        frame of `decode`'s low-res logits, as `postprocess` reads it back (resized, padded to the square)."""
        size = self.cfg.image_size
        masks = F.interpolate(masks.float()[:, None], tuple(input_size), mode="nearest")
        masks = F.pad(masks, (0, size - input_size[1], 0, size - input_size[0]))
        return F.adaptive_avg_pool2d(masks, tuple(low_size))[:, 0]

    def decode_each(
        self,
        image_embeddings: torch.Tensor,
        skips: tuple[torch.Tensor, ...],
        prompts: torch.Tensor,
        prompt_image: torch.Tensor,
        resize_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
        keep: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Prompts of many images in one `decode` call -> (per image (N_i, H_i, W_i) logits in prompt order, (N, 4h,
        4w) low-resolution logits of every prompt).

        image_embeddings / skips: (I, ...) per image. prompt_image: (N,) the image of each prompt. keep: (N,) bool,
        the prompts whose full-size masks are wanted (all by default; a presence verifier reads the others' low-res).
        """
        low_res = self.decode(image_embeddings[prompt_image], prompts, tuple(x[prompt_image] for x in skips))
        kept, owner = (low_res, prompt_image) if keep is None else (low_res[keep], prompt_image[keep])
        masks = [
            self.postprocess(kept[owner == i], resize_sizes[i], original_sizes[i])
            for i in range(image_embeddings.shape[0])
        ]
        return masks, low_res
