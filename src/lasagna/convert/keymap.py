"""Explicit key maps: names in released checkpoints -> names in our `LasagnaModel` state dict.

Three sources, three rule lists:

- the released LaSagnA / LISA HF folder (`official_rules`): LLaMA (`model.layers.N...`, `lm_head`), LLaVA's
  `model.mm_projector`, the `model.text_hidden_fcs` MLP and SAM under `model.visual_model.` with the original
  segment-anything module names;
- the original SAM checkpoint, e.g. `sam_vit_h_4b8939.pth` (`sam_rules("")`): the same SAM names without a prefix;
- a CLIP folder (`CLIP_RULES`): a CLIPVisionModel or a whole CLIPModel, of which only the vision tower is kept.

Every rule is one anchored regex and a target template (`\\1` ... refer to its groups) or, for a named allow-list
entry, a reason instead of a target. A source name must match exactly one rule; a name that matches none is an error
that names it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

CLIP_PREFIX = "vision_tower."  # our CLIP keys; released LaSagnA folders never contain them


class KeyMapError(ValueError):
    """A source state dict that the key maps do not account for."""


@dataclass(frozen=True)
class Rule:
    """`pattern` (anchored, matched with fullmatch) -> `target` template, or skipped with `reason`."""

    pattern: str
    target: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if (self.target is None) == (self.reason is None):
            raise ValueError(f"rule {self.pattern!r} needs exactly one of target and reason")

    def apply(self, name: str) -> str | None:
        """Our name for `name` (which must match), or None for an allowed leftover."""
        if self.target is None:
            return None
        return re.fullmatch(self.pattern, name).expand(self.target)


def _rules(prefix: str, pairs: Sequence[tuple[str, str]], target_prefix: str) -> list[Rule]:
    return [Rule(re.escape(prefix) + pat, target_prefix + tgt) for pat, tgt in pairs]


_WB = r"(weight|bias)"

# SAM, original segment-anything names (left) -> transformers' SamVisionEncoder / SamPromptEncoder / SamMaskDecoder.
# The Sequential indices follow the original layouts: neck = Conv, LayerNorm2d, Conv, LayerNorm2d; mask_downscaling =
# Conv, LN, act, Conv, LN, act, Conv; output_upscaling = ConvT, LN, act, ConvT, act. SAM's MLPs have 3 layers:
# layers.0/1/2 = proj_in / layers.0 / proj_out.
_SAM_PAIRS: tuple[tuple[str, str], ...] = (
    (r"image_encoder\.patch_embed\.proj\." + _WB, r"image_encoder.patch_embed.projection.\1"),
    (r"image_encoder\.pos_embed", r"image_encoder.pos_embed"),
    (r"image_encoder\.blocks\.(\d+)\.norm([12])\." + _WB, r"image_encoder.layers.\1.layer_norm\2.\3"),
    (r"image_encoder\.blocks\.(\d+)\.attn\.(qkv|proj)\." + _WB, r"image_encoder.layers.\1.attn.\2.\3"),
    (r"image_encoder\.blocks\.(\d+)\.attn\.(rel_pos_h|rel_pos_w)", r"image_encoder.layers.\1.attn.\2"),
    (r"image_encoder\.blocks\.(\d+)\.mlp\.(lin1|lin2)\." + _WB, r"image_encoder.layers.\1.mlp.\2.\3"),
    (r"image_encoder\.neck\.0\.weight", r"image_encoder.neck.conv1.weight"),
    (r"image_encoder\.neck\.1\." + _WB, r"image_encoder.neck.layer_norm1.\1"),
    (r"image_encoder\.neck\.2\.weight", r"image_encoder.neck.conv2.weight"),
    (r"image_encoder\.neck\.3\." + _WB, r"image_encoder.neck.layer_norm2.\1"),
    (
        r"prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix",
        r"prompt_encoder.shared_embedding.positional_embedding",
    ),
    (r"prompt_encoder\.point_embeddings\.(\d+)\.weight", r"prompt_encoder.point_embed.\1.weight"),
    (r"prompt_encoder\.(not_a_point_embed|no_mask_embed)\.weight", r"prompt_encoder.\1.weight"),
    (r"prompt_encoder\.mask_downscaling\.0\." + _WB, r"prompt_encoder.mask_embed.conv1.\1"),
    (r"prompt_encoder\.mask_downscaling\.1\." + _WB, r"prompt_encoder.mask_embed.layer_norm1.\1"),
    (r"prompt_encoder\.mask_downscaling\.3\." + _WB, r"prompt_encoder.mask_embed.conv2.\1"),
    (r"prompt_encoder\.mask_downscaling\.4\." + _WB, r"prompt_encoder.mask_embed.layer_norm2.\1"),
    (r"prompt_encoder\.mask_downscaling\.6\." + _WB, r"prompt_encoder.mask_embed.conv3.\1"),
    (r"mask_decoder\.(iou_token|mask_tokens)\.weight", r"mask_decoder.\1.weight"),
    (
        r"mask_decoder\.transformer\.layers\.(\d+)\.(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
        r"\.(q_proj|k_proj|v_proj|out_proj)\." + _WB,
        r"mask_decoder.transformer.layers.\1.\2.\3.\4",
    ),
    (
        r"mask_decoder\.transformer\.layers\.(\d+)\.norm([1-4])\." + _WB,
        r"mask_decoder.transformer.layers.\1.layer_norm\2.\3",
    ),
    (
        r"mask_decoder\.transformer\.layers\.(\d+)\.mlp\.(lin1|lin2)\." + _WB,
        r"mask_decoder.transformer.layers.\1.mlp.\2.\3",
    ),
    (
        r"mask_decoder\.transformer\.final_attn_token_to_image\.(q_proj|k_proj|v_proj|out_proj)\." + _WB,
        r"mask_decoder.transformer.final_attn_token_to_image.\1.\2",
    ),
    (r"mask_decoder\.transformer\.norm_final_attn\." + _WB, r"mask_decoder.transformer.layer_norm_final_attn.\1"),
    (r"mask_decoder\.output_upscaling\.0\." + _WB, r"mask_decoder.upscale_conv1.\1"),
    (r"mask_decoder\.output_upscaling\.1\." + _WB, r"mask_decoder.upscale_layer_norm.\1"),
    (r"mask_decoder\.output_upscaling\.3\." + _WB, r"mask_decoder.upscale_conv2.\1"),
    (
        r"mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.0\." + _WB,
        r"mask_decoder.\1.proj_in.\2",
    ),
    (
        r"mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.1\." + _WB,
        r"mask_decoder.\1.layers.0.\2",
    ),
    (
        r"mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.2\." + _WB,
        r"mask_decoder.\1.proj_out.\2",
    ),
)


def sam_rules(prefix: str) -> list[Rule]:
    """SAM rules for names that start with `prefix` ("" for sam_vit_h_4b8939.pth, "model.visual_model." in LaSagnA)."""
    return _rules(prefix, _SAM_PAIRS, "sam.")


# LLaMA in transformers 4.31 naming (what the released folders use) -> our `llm` (an AutoModelForCausalLM).
_LLM_PAIRS: tuple[tuple[str, str], ...] = (
    (r"model\.embed_tokens\.weight", r"llm.model.embed_tokens.weight"),
    (
        r"model\.layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj|input_layernorm|post_attention_layernorm)"
        r"\.weight",
        r"llm.model.layers.\1.\2.weight",
    ),
    (r"model\.norm\.weight", r"llm.model.norm.weight"),
    (r"lm_head\.weight", r"llm.lm_head.weight"),
    # LLaVA's mm_projector: one Linear ("linear", LLaVA-Lightning) or Linear-GELU-Linear ("mlp2x_gelu", LLaVA-1.5).
    (r"model\.mm_projector\." + _WB, r"projector.\1"),
    (r"model\.mm_projector\.([02])\." + _WB, r"projector.\1.\2"),
    # ModuleList([Sequential(Linear, ReLU, Linear, Dropout)]) -> Sequential(Linear, ReLU, Linear).
    (r"model\.text_hidden_fcs\.0\.([02])\." + _WB, r"text_projector.\1.\2"),
)

ALLOWED_OFFICIAL_LEFTOVERS: tuple[Rule, ...] = (
    Rule(
        r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",
        reason="RoPE inverse frequencies: a persistent buffer in transformers 4.31, recomputed from the config here",
    ),
)


def official_rules() -> list[Rule]:
    """Rules for a released LaSagnA-7B / LISA-7B HF folder (CLIP is not in it)."""
    return [*_rules("", _LLM_PAIRS, ""), *sam_rules("model.visual_model."), *ALLOWED_OFFICIAL_LEFTOVERS]


# CLIP: a CLIPVisionModel or CLIPModel folder names the tower `vision_model.*`; transformers 5 saves a
# CLIPVisionModel without that prefix, so it is optional. Our CLIPVisionModel has the flat layout.
_CLIP_PAIRS: tuple[tuple[str, str], ...] = (
    (
        r"(?:vision_model\.)?(embeddings\.(?:class_embedding|patch_embedding\.weight|position_embedding\.weight))",
        r"vision_tower.\1",
    ),
    (r"(?:vision_model\.)?((?:pre_layrnorm|post_layernorm)\.(?:weight|bias))", r"vision_tower.\1"),
    (
        r"(?:vision_model\.)?(encoder\.layers\.\d+\.(?:self_attn\.(?:q_proj|k_proj|v_proj|out_proj)|layer_norm[12]"
        r"|mlp\.fc[12])\.(?:weight|bias))",
        r"vision_tower.\1",
    ),
)

CLIP_SKIPS: tuple[Rule, ...] = (
    Rule(r"text_model\..+", reason="CLIPModel's text tower: LLaVA uses only the vision tower"),
    Rule(
        r"text_projection\.weight|visual_projection\.weight|logit_scale",
        reason="CLIPModel's contrastive heads: LLaVA reads vision hidden states, not the projected embedding",
    ),
    Rule(
        r"(?:vision_model\.)?embeddings\.position_ids",
        reason="position ids: a persistent buffer in older transformers, rebuilt from the config here",
    ),
)

CLIP_RULES: tuple[Rule, ...] = (*_rules("", _CLIP_PAIRS, ""), *CLIP_SKIPS)


def match_rule(name: str, rules: Iterable[Rule]) -> Rule | None:
    """The one rule matching `name`, None when none does; two matches are a bug in the rule lists."""
    hits = [r for r in rules if re.fullmatch(r.pattern, name)]
    if len(hits) > 1:
        raise RuntimeError(f"key {name!r} matches {len(hits)} rules: {[r.pattern for r in hits]}")
    return hits[0] if hits else None


@dataclass
class KeyPlan:
    """How a source state dict maps onto ours.

    mapping: source name -> our name. skipped: allowed leftover -> reason. unknown: source names no rule matches.
    no_target: source name -> the name its rule gives, which our model lacks (or another source name already fills).
    shape_mismatch: (source name, source shape, our shape). missing: our names (within scope) nothing fills.
    """

    mapping: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    no_target: dict[str, str] = field(default_factory=dict)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def unexpected(self) -> list[str]:
        return [*self.unknown, *self.no_target]

    @property
    def ok(self) -> bool:
        return not (self.unexpected or self.missing or self.shape_mismatch)

    def problems(self) -> list[str]:
        """One line per problem key, for errors and `--verbose`."""
        lines = [f"unexpected (no rule): {k}" for k in self.unknown]
        lines += [
            f"unexpected (rule gives {t!r}, which is not ours or already filled): {k}"
            for k, t in self.no_target.items()
        ]
        lines += [f"missing: {k}" for k in self.missing]
        lines += [f"shape mismatch: {k} {list(a)} vs ours {list(b)}" for k, a, b in self.shape_mismatch]
        return lines

    def raise_if_bad(self, what: str) -> None:
        if not self.ok:
            lines = self.problems()
            shown = "\n  ".join(lines[:40]) + ("\n  ..." if len(lines) > 40 else "")
            raise KeyMapError(f"{what}: the weights do not match the model ({len(lines)} problem keys):\n  {shown}")


def plan_keys(
    source: Mapping[str, Sequence[int]],
    rules: Sequence[Rule],
    ours: Mapping[str, Sequence[int]],
    scope: Iterable[str] | None = None,
) -> KeyPlan:
    """Map every source name (with its shape) onto `ours` (our names with shapes).

    `scope`: our names this source is expected to fill (default: all of `ours`); the rest is not reported missing.
    """
    plan = KeyPlan()
    filled: set[str] = set()
    for name in sorted(source):
        rule = match_rule(name, rules)
        if rule is None:
            plan.unknown.append(name)
            continue
        target = rule.apply(name)
        if target is None:
            plan.skipped[name] = rule.reason or ""
            continue
        if target not in ours or target in filled:
            plan.no_target[name] = target
            continue
        filled.add(target)
        plan.mapping[name] = target
        if tuple(source[name]) != tuple(ours[target]):
            plan.shape_mismatch.append((name, tuple(source[name]), tuple(ours[target])))
    wanted = set(ours) if scope is None else set(scope)
    plan.missing = sorted(wanted - filled)
    return plan
