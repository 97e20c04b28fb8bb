"""The LLaVA half: CLIP vision tower, image projector, causal LLM, and the `<image>` expansion between them."""

from __future__ import annotations

from dataclasses import dataclass

# why transformers' submodules, not `from transformers import ...`: the package's lazy top-level index costs about 0.4 s
# of CPU more at start-up (benchmarks/startup.py); so for every transformers import on the path of `lasagna segment`.
import torch
from torch import nn
from transformers.models.auto.configuration_auto import AutoConfig
from transformers.models.auto.modeling_auto import AutoModelForCausalLM
from transformers.models.clip.configuration_clip import CLIPVisionConfig
from transformers.models.clip.modeling_clip import CLIPVisionModel

from ..config import LLMConfig, VisionConfig
from ..tokens import IGNORE_INDEX, IMAGE_TOKEN_ID
from .stem import ConvStem


def build_vision_tower(cfg: VisionConfig) -> CLIPVisionModel:
    hf = CLIPVisionConfig(
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_act=cfg.hidden_act,
        layer_norm_eps=cfg.layer_norm_eps,
    )
    hf._attn_implementation = "sdpa"
    tower = CLIPVisionModel(hf)
    if cfg.conv_stem:
        tower.embeddings.patch_embedding = ConvStem(cfg.conv_stem, cfg.hidden_size, cfg.patch_size, "vision")
    return tower


def build_llm(cfg: LLMConfig) -> nn.Module:
    hf = AutoConfig.for_model(
        cfg.arch,
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_word_embeddings,
    )
    hf._attn_implementation = "sdpa"
    return AutoModelForCausalLM.from_config(hf)


def vision_features(tower: CLIPVisionModel, cfg: VisionConfig, pixels: torch.Tensor) -> torch.Tensor:
    """(I, 3, S, S) CLIP-normalised images -> (I, N, vision_hidden) features from `cfg.feature_layer`."""
    out = tower(pixel_values=pixels, output_hidden_states=True)
    feats = out.hidden_states[cfg.feature_layer]
    if cfg.feature_norm:
        feats = tower.post_layernorm(feats)
    return feats[:, 1:] if cfg.drop_cls else feats


def pool_features(feats: torch.Tensor, cfg: VisionConfig) -> torch.Tensor:
    """(I, N, D) features of `vision_features` -> (I, cfg.num_features, cfg.feature_dim): each k x k block of patches
    (k = cfg.feature_pool) averaged, or its features concatenated in row-major order (`feature_pool_mode: concat`),
    blocks row-major as the patches were; the CLS feature, when kept, stays first and alone (tiled k*k times under
    concat, to the blocks' width)."""
    k = cfg.feature_pool
    if k == 1:
        return feats
    cls, patches = (feats[:, :0], feats) if cfg.drop_cls else (feats[:, :1], feats[:, 1:])
    side = cfg.grid // k
    images, _, dim = patches.shape
    blocks = patches.reshape(images, side, k, side, k, dim)
    if cfg.feature_pool_mode == "mean":
        return torch.cat([cls, blocks.mean(dim=(2, 4)).reshape(images, -1, dim)], dim=1)
    blocks = blocks.permute(0, 1, 3, 2, 4, 5).reshape(images, side * side, k * k * dim)
    return torch.cat([cls.repeat(1, 1, k * k), blocks], dim=1)


@dataclass
class Expanded:
    """A text batch after each `<image>` id became N image features.

    embeds: (B, L + N - 1, D). input_ids / labels / attention_mask: (B, L + N - 1), with IMAGE_TOKEN_ID and
    IGNORE_INDEX at the image positions, so special tokens can be found by id in the expanded frame.
    """

    embeds: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None


def expand_images(
    embed_tokens: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    image_feats: torch.Tensor,
    pad_id: int,
    labels: torch.Tensor | None = None,
) -> Expanded:
    """Replace the single IMAGE_TOKEN_ID of every row with that row's image features.

    input_ids: (B, L) with exactly one IMAGE_TOKEN_ID per row. image_feats: (B, N, D), row b's image.
    Rows keep their right padding; every row grows by N - 1, so no re-padding is needed.
    """
    b, length = input_ids.shape
    n = image_feats.shape[1]
    is_image = input_ids == IMAGE_TOKEN_ID
    counts = is_image.sum(1)
    if not bool((counts == 1).all()):
        bad = [int(i) for i in torch.nonzero(counts != 1).flatten()]
        raise ValueError(f"every sequence needs exactly one <image> token; rows {bad} have {counts[bad].tolist()}")
    img_pos = is_image.float().argmax(1)[:, None]  # (B, 1)
    pos = torch.arange(length + n - 1, device=input_ids.device)[None]  # (1, L')
    in_image = (pos >= img_pos) & (pos < img_pos + n)
    text_src = torch.where(pos < img_pos, pos, pos - n + 1).clamp(0, length - 1)  # (B, L')
    image_src = (pos - img_pos).clamp(0, n - 1)

    token_embeds = embed_tokens(input_ids.masked_fill(is_image, pad_id))
    d = token_embeds.shape[-1]
    text_part = token_embeds.gather(1, text_src[..., None].expand(b, -1, d))
    image_part = image_feats.to(token_embeds.dtype).gather(1, image_src[..., None].expand(b, -1, d))
    embeds = torch.where(in_image[..., None], image_part, text_part)

    ids = torch.where(in_image, IMAGE_TOKEN_ID, input_ids.gather(1, text_src))
    mask = torch.where(in_image, torch.ones_like(in_image), attention_mask.gather(1, text_src).bool())
    new_labels = None
    if labels is not None:
        new_labels = torch.where(in_image, IGNORE_INDEX, labels.gather(1, text_src))
    return Expanded(embeds=embeds, input_ids=ids, attention_mask=mask.long(), labels=new_labels)
