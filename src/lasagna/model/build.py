"""Which parameters train: the paper's choice by default, every group switchable both ways.

Paper (released code): LoRA r8 / alpha 16 / dropout 0.05 on the LLM's q_proj and v_proj; embed_tokens, lm_head, the
SAM mask decoder and the text projector fully trainable; CLIP, the image projector, SAM's image and prompt encoders
and the LLM base weights frozen. A model trained from scratch (ShapeWorld) turns the encoders on and LoRA off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from .lasagna import LasagnaModel

log = logging.getLogger(__name__)


@dataclass
class TrainableConfig:
    lora_r: int = 8  # 0 = no LoRA
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    llm_full: bool = False  # every LLM weight trainable (small models); excludes LoRA
    embeddings: bool = True  # embed_tokens and lm_head, whole matrices
    mask_decoder: bool = True
    text_projector: bool = True
    vision_tower: bool = False
    image_projector: bool = False
    sam_image_encoder: bool = False
    sam_prompt_encoder: bool = False


def _set(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def apply_lora(model: LasagnaModel, cfg: TrainableConfig) -> None:
    """Wrap the LLM with peft LoRA adapters on `cfg.lora_targets` (only inside the LLM, never SAM or CLIP)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_targets),
        bias="none",
    )
    model.llm = get_peft_model(model.llm, lora)


def merge_lora(model: LasagnaModel) -> None:
    """Fold LoRA weights into the base LLM so the model has plain key names again (export)."""
    from peft import PeftModel

    if isinstance(model.llm, PeftModel):
        model.llm = model.llm.merge_and_unload()


def _freeze_unused_decoder_heads(model: LasagnaModel) -> None:
    """Single-mask output reads only mask token 0 and never the IoU head: those weights would get no gradient."""
    decoder = model.sam.mask_decoder
    _set(decoder.iou_prediction_head, False)
    for mlp in decoder.output_hypernetworks_mlps[1:]:
        _set(mlp, False)


def cast_frozen(model: LasagnaModel, dtype: torch.dtype) -> None:
    """Frozen parameters to `dtype`; trainable ones keep theirs (fp32 for the optimizer). Call after
    configure_trainable. why: under bf16 autocast a frozen fp32 weight is cast to bf16 at every use anyway."""
    for p in model.parameters():
        if not p.requires_grad:
            p.data = p.data.to(dtype)


def configure_trainable(model: LasagnaModel, cfg: TrainableConfig) -> dict[str, int]:
    """Freeze/unfreeze groups (and add LoRA) per `cfg`; returns and logs parameter counts."""
    if cfg.llm_full and cfg.lora_r > 0:
        raise ValueError("trainable: llm_full and LoRA (lora_r > 0) exclude each other; set lora_r: 0")
    _set(model, False)
    if cfg.lora_r > 0:
        apply_lora(model, cfg)  # peft marks only the adapters trainable inside the LLM
    _set(model.llm, cfg.llm_full)
    if cfg.lora_r > 0:
        for name, p in model.llm.named_parameters():
            p.requires_grad_("lora_" in name)
    if cfg.embeddings:
        _set(model.llm.get_input_embeddings(), True)
        _set(model.llm.get_output_embeddings(), True)
    _set(model.sam.mask_decoder, cfg.mask_decoder)
    if model.sam.stem_skips is not None:
        _set(model.sam.stem_skips, cfg.mask_decoder)  # part of the decoder's upscaling
    _freeze_unused_decoder_heads(model)
    _set(model.text_projector, cfg.text_projector)
    _set(model.vision_tower, cfg.vision_tower)
    _set(model.projector, cfg.image_projector)
    if model.image_positions is not None:
        model.image_positions.requires_grad_(cfg.image_projector)  # they live with the projector's output
    if model.image_grid is not None:
        _set(model.image_grid, cfg.image_projector)
    _set(model.sam.image_encoder, cfg.sam_image_encoder)
    _set(model.sam.prompt_encoder, cfg.sam_prompt_encoder)
    counts = {
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "frozen": sum(p.numel() for p in model.parameters() if not p.requires_grad),
    }
    log.info("parameters: %(trainable)d trainable, %(frozen)d frozen", counts)
    return counts
