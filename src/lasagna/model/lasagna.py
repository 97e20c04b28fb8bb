"""LasagnaModel: composes the boxes. Vision tower + projector + LLM (LLaVA half), SAM, and the text projector.

The mask embedding for each `<ins>` is the final-norm last-layer hidden state at the position *before* that `<ins>`
(the state whose lm_head output predicts `<ins>`), found by token id in the image-expanded sequence.
"""

from __future__ import annotations

import contextlib
import zlib
from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from .mllm import Expanded, build_llm, build_vision_tower, expand_images, pool_features, vision_features
from .projector import image_projector, text_projector
from .sam import SamSegmenter, sincos_grid


@dataclass
class LasagnaInputs:
    """A collated batch: B conversations over I images.

    input_ids, attention_mask, labels: (B, L), one IMAGE_TOKEN_ID per row, right-padded.
    image_index: (B,) which image each conversation is about.
    clip_pixels: (I, 3, s, s); sam_pixels: (I, 3, S, S) zero-padded squares.
    resize_sizes / original_sizes: per image (h', w') inside the SAM square and (H, W) of the original.
    gt_masks: per image (N_i, H_i, W_i) targets in `<ins>` order; ignore: per image (H_i, W_i) bool or None.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    image_index: torch.Tensor
    clip_pixels: torch.Tensor
    sam_pixels: torch.Tensor
    resize_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]
    labels: torch.Tensor | None = None
    gt_masks: list[torch.Tensor] | None = None
    ignore: list[torch.Tensor | None] | None = None

    def to(self, device: torch.device | str) -> LasagnaInputs:
        def move(x):
            if isinstance(x, torch.Tensor):
                return x.to(device)
            if isinstance(x, list):
                return [move(v) for v in x]
            return x

        return LasagnaInputs(**{k: move(v) for k, v in self.__dict__.items()})


@dataclass
class ImageEncoding:
    """Per-image encoder outputs, computed once and reused by every conversation and chunk about the image.

    llm_feats: (I, N, hidden) projected CLIP features. sam_embeds: (I, C, h, w) SAM image embeddings.
    sam_skips: the SAM stem's finer maps, each (I, c, H, W), or () without stem skips (`SamSegmenter.skip_maps`).
    """

    llm_feats: torch.Tensor
    sam_embeds: torch.Tensor
    sam_skips: tuple[torch.Tensor, ...] = ()

    def skips_of(self, i: int) -> tuple[torch.Tensor, ...]:
        """Image i's skip maps, each with a batch of 1."""
        return tuple(s[i : i + 1] for s in self.sam_skips)


@dataclass
class LasagnaOutput:
    """logits: (B, L', V) over the expanded sequence; labels: (B, L') expanded targets or None.

    mask_logits: per image (N_i, H_i, W_i) float32 logits at the original size, in `<ins>` order.
    mask_embeddings: (M, C) prompts, M = number of `<ins>` in the batch, row-major order.
    hidden / input_ids: (B, L', hidden) last-layer states and (B, L') ids of the expanded sequence (`losses.place_ce`).
    images: the encoders' outputs the batch was answered from (what modules trained on top of the model read).
    """

    logits: torch.Tensor
    labels: torch.Tensor | None
    mask_logits: list[torch.Tensor]
    mask_embeddings: torch.Tensor
    hidden: torch.Tensor
    input_ids: torch.Tensor
    images: ImageEncoding


def _maybe_no_grad(module: nn.Module):
    """Frozen encoders run without autograd bookkeeping (the paper freezes both; ShapeWorld trains them)."""
    trainable = any(p.requires_grad for p in module.parameters())
    return contextlib.nullcontext() if trainable and torch.is_grad_enabled() else torch.no_grad()


@contextlib.contextmanager
def seeded(seed: int | None, part: str):
    """Draw `part`'s initial weights from a seed of its own, leaving the caller's RNG as it was; no-op for None.

    why: with one shared stream, a part's init would depend on the sizes of the parts built before it (a new
    tokenizer's vocabulary would change SAM's random start)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(zlib.crc32(f"{seed}:{part}".encode()))
        yield


def grid_code(cfg: ModelConfig) -> torch.Tensor:
    """(num_features, image_grid_code) where each image token sits, as `sincos_grid` of its column and row.

    why computed at each call, not a buffer: a model built on the meta device (`checkpoint.build_from_state`) would
    need it rebuilt, and it costs nothing beside the forward."""
    code = sincos_grid(cfg.vision.feature_grid, cfg.image_grid_code).flatten(0, 1)
    return torch.cat([code.new_zeros(cfg.vision.cls_tokens, code.shape[1]), code])  # CLS is nowhere


class LasagnaModel(nn.Module):
    def __init__(self, cfg: ModelConfig, seed: int | None = None):
        """`seed`: each part's random init comes from its own seed derived from this one (None: the global RNG)."""
        super().__init__()
        self.cfg = cfg
        with seeded(seed, "vision_tower"):
            self.vision_tower = build_vision_tower(cfg.vision)
        with seeded(seed, "projector"):
            self.projector = image_projector(cfg.projector, cfg.vision.feature_dim, cfg.llm.hidden_size)
        self.image_positions: nn.Parameter | None = None
        if cfg.image_positions:
            with seeded(seed, "image_positions"):
                self.image_positions = nn.Parameter(torch.randn(cfg.vision.num_features, cfg.llm.hidden_size) * 0.02)
        self.image_grid: nn.Linear | None = None
        if cfg.image_grid_code:
            with seeded(seed, "image_grid"):  # why: nn.Linear's own init draws, and must not move the LLM's
                self.image_grid = nn.Linear(cfg.image_grid_code, cfg.llm.hidden_size, bias=False)
            nn.init.zeros_(self.image_grid.weight)  # why: added to a trained model, it changes nothing until trained
        with seeded(seed, "llm"):
            self.llm = build_llm(cfg.llm)
        with seeded(seed, "sam"):
            self.sam = SamSegmenter(cfg.sam)
        with seeded(seed, "text_projector"):
            self.text_projector = text_projector(cfg.llm.hidden_size, cfg.sam.prompt_dim)
        self.ins_id: int | None = None
        self.no_ins_id: int | None = None
        self.pad_id: int = 0

    def set_token_ids(self, ins_id: int, pad_id: int, no_ins_id: int | None = None) -> None:
        """Ids come from the tokenizer that travels with the checkpoint, never from constants."""
        self.ins_id, self.pad_id = int(ins_id), int(pad_id)
        self.no_ins_id = None if no_ins_id is None else int(no_ins_id)

    @property
    def embed_tokens(self) -> nn.Module:
        return self.llm.get_input_embeddings()

    def encode_images(self, clip_pixels: torch.Tensor, sam_pixels: torch.Tensor) -> ImageEncoding:
        # why: a model cast whole to bf16 (DeepSpeed's bf16) runs without autocast, so pixels come in its dtype
        clip_pixels = clip_pixels.to(next(self.vision_tower.parameters()).dtype)
        sam_pixels = sam_pixels.to(next(self.sam.image_encoder.parameters()).dtype)
        with _maybe_no_grad(self.vision_tower):
            feats = vision_features(self.vision_tower, self.cfg.vision, clip_pixels)
        with _maybe_no_grad(self.sam.image_encoder):
            sam_embeds = self.sam.embed_images(sam_pixels)
            skips = self.sam.skip_maps(sam_pixels)
        llm_feats = self.projector(pool_features(feats, self.cfg.vision))
        if self.image_positions is not None:
            llm_feats = llm_feats + self.image_positions.to(llm_feats.dtype)
        if self.image_grid is not None:
            code = grid_code(self.cfg).to(llm_feats.device, self.image_grid.weight.dtype)
            llm_feats = llm_feats + self.image_grid(code).to(llm_feats.dtype)
        return ImageEncoding(llm_feats=llm_feats, sam_embeds=sam_embeds, sam_skips=skips)

    def expand(self, inputs: LasagnaInputs, images: ImageEncoding) -> Expanded:
        return expand_images(
            self.embed_tokens,
            inputs.input_ids,
            inputs.attention_mask,
            images.llm_feats[inputs.image_index],
            self.pad_id,
            inputs.labels,
        )

    def grid_cells(self) -> torch.Tensor:
        """(feature_grid ** 2, hidden) what `image_grid` adds to each grid token: the model's code of its place."""
        if self.image_grid is None:
            raise RuntimeError("grid_cells needs image_grid_code > 0")
        code = grid_code(self.cfg)[self.cfg.vision.cls_tokens :]
        return self.image_grid(code.to(self.image_grid.weight.device, self.image_grid.weight.dtype))

    def hidden_states(self, expanded: Expanded) -> torch.Tensor:
        """(B, L', hidden) final-norm last-layer states: the tensor that feeds lm_head."""
        backbone = self.llm.get_decoder()
        out = backbone(inputs_embeds=expanded.embeds, attention_mask=expanded.attention_mask, use_cache=False)
        return out.last_hidden_state

    def select_mask_embeddings(self, hidden: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project the hidden state before every `<ins>` -> ((M, C) prompts, (M,) row of each), row-major order."""
        if self.ins_id is None:
            raise RuntimeError("token ids not set: call set_token_ids (from_pretrained does this)")
        before_ins = torch.zeros_like(ids, dtype=torch.bool)
        before_ins[:, :-1] = ids[:, 1:] == self.ins_id
        rows = before_ins.nonzero()[:, 0]
        return self.text_projector(hidden[before_ins]), rows

    def decode_masks(
        self,
        images: ImageEncoding,
        prompts: torch.Tensor,
        prompt_image: torch.Tensor,
        resize_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
    ) -> list[torch.Tensor]:
        """Decode every prompt in one call, each on its image -> per image (N_i, H_i, W_i) logits, in prompt order."""
        return self.sam.decode_each(
            images.sam_embeds, images.sam_skips, prompts, prompt_image, resize_sizes, original_sizes
        )[0]

    def forward(self, inputs: LasagnaInputs, images: ImageEncoding | None = None) -> LasagnaOutput:
        if images is None:
            images = self.encode_images(inputs.clip_pixels, inputs.sam_pixels)
        expanded = self.expand(inputs, images)
        hidden = self.hidden_states(expanded)
        logits = self.llm.get_output_embeddings()(hidden)
        prompts, rows = self.select_mask_embeddings(hidden, expanded.input_ids)
        mask_logits = self.decode_masks(
            images, prompts, inputs.image_index[rows], inputs.resize_sizes, inputs.original_sizes
        )
        return LasagnaOutput(
            logits=logits,
            labels=expanded.labels,
            mask_logits=mask_logits,
            mask_embeddings=prompts,
            hidden=hidden,
            input_ids=expanded.input_ids,
            images=images,
        )
