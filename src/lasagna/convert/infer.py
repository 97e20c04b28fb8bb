"""Our `ModelConfig` from a released folder: LLaMA dims from its config.json, CLIP dims from the CLIP folder's
config.json, SAM dims from the SAM weight shapes (the released config.json says nothing about SAM).

The released config.json has model_type "llava", which transformers >= 4.36 reads as its own (different) LLaVA
config, so it is parsed here as plain JSON and never given to AutoConfig.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import LLMConfig, ModelConfig, PreprocessConfig, SamConfig, VisionConfig

# SAM's mask decoder head count cannot be read off weight shapes; every released SAM (ViT-B/L/H) uses 8.
SAM_DECODER_HEADS = 8

Shapes = Mapping[str, tuple[int, ...]]


def read_json(path: Path, what: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{what}: {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what}: {path} must hold a JSON object")
    return data


def _need(data: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise KeyError(f"{where} lacks {key!r}")
    return data[key]


def _shape(shapes: Shapes, name: str) -> tuple[int, ...]:
    if name not in shapes:
        raise KeyError(f"cannot infer the SAM config: the weights lack {name!r}")
    return shapes[name]


def _indices(shapes: Shapes, pattern: str) -> list[int]:
    """Sorted distinct block indices N of names matching `pattern` (one group capturing N)."""
    found = {int(m.group(1)) for name in shapes if (m := re.fullmatch(pattern, name))}
    if found != set(range(len(found))):
        raise ValueError(f"block indices for {pattern!r} are not 0..n-1: {sorted(found)}")
    return sorted(found)


def sam_config_from_shapes(shapes: Shapes, prefix: str, decoder_heads: int = SAM_DECODER_HEADS) -> SamConfig:
    """Infer SAM's sizes from its weights (original segment-anything names under `prefix`).

    pos_embed (1, g, g, C) gives the width and the grid; patch_embed (C, 3, p, p) the patch; rel_pos_h (2s - 1, d)
    per block the head size d and the attention span s: s == g for global blocks, the window otherwise.
    """
    enc, dec = prefix + "image_encoder.", prefix + "mask_decoder."
    _, grid, _, hidden = _shape(shapes, enc + "pos_embed")
    patch = _shape(shapes, enc + "patch_embed.proj.weight")[-1]
    blocks = _indices(shapes, re.escape(enc) + r"blocks\.(\d+)\.norm1\.weight")
    if not blocks:
        raise ValueError(f"no SAM image-encoder blocks under {enc!r}")
    spans = {i: _shape(shapes, f"{enc}blocks.{i}.attn.rel_pos_h")[0] for i in blocks}
    head_dim = _shape(shapes, f"{enc}blocks.0.attn.rel_pos_h")[1]
    global_blocks = [i for i in blocks if spans[i] == 2 * grid - 1]
    windows = {(spans[i] + 1) // 2 for i in blocks if i not in global_blocks}
    if len(windows) > 1:
        raise ValueError(f"SAM blocks disagree on the attention window: {sorted(windows)}")
    prompt_dim = _shape(shapes, enc + "neck.0.weight")[0]
    return SamConfig(
        image_size=grid * patch,
        patch_size=patch,
        hidden_size=hidden,
        num_hidden_layers=len(blocks),
        num_attention_heads=hidden // head_dim,
        mlp_dim=_shape(shapes, enc + "blocks.0.mlp.lin1.weight")[0],
        window_size=windows.pop() if windows else grid,
        global_attn_indexes=global_blocks,
        prompt_dim=prompt_dim,
        decoder_mlp_dim=_shape(shapes, dec + "transformer.layers.0.mlp.lin1.weight")[0],
        decoder_num_layers=len(_indices(shapes, re.escape(dec) + r"transformer\.layers\.(\d+)\.norm1\.weight")),
        decoder_num_heads=decoder_heads,
        num_multimask_outputs=_shape(shapes, dec + "mask_tokens.weight")[0] - 1,
    )


def llm_config_from_hf(hf: Mapping[str, Any], where: str) -> LLMConfig:
    if hf.get("rope_scaling"):
        raise ValueError(f"{where}: rope_scaling {hf['rope_scaling']!r} is not supported")
    heads = int(_need(hf, "num_attention_heads", where))
    return LLMConfig(
        arch="llama",
        vocab_size=int(_need(hf, "vocab_size", where)),
        hidden_size=int(_need(hf, "hidden_size", where)),
        intermediate_size=int(_need(hf, "intermediate_size", where)),
        num_hidden_layers=int(_need(hf, "num_hidden_layers", where)),
        num_attention_heads=heads,
        num_key_value_heads=int(hf.get("num_key_value_heads") or heads),
        max_position_embeddings=int(_need(hf, "max_position_embeddings", where)),
        rms_norm_eps=float(_need(hf, "rms_norm_eps", where)),
        rope_theta=float(hf.get("rope_theta", 10000.0)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )


def vision_config_from_clip(clip_dir: Path, hf: Mapping[str, Any], where: str) -> VisionConfig:
    """CLIP sizes from the CLIP folder (a CLIPVisionModel or CLIPModel config); feature choice from the release."""
    from transformers import CLIPVisionConfig  # reads both layouts; our own folder, not the "llava" config

    clip = CLIPVisionConfig.from_pretrained(str(clip_dir))
    feature = hf.get("mm_vision_select_feature", "patch")
    if feature not in ("patch", "cls_patch"):
        raise ValueError(f"{where}: mm_vision_select_feature {feature!r} is not 'patch' or 'cls_patch'")
    mm_hidden = hf.get("mm_hidden_size", clip.hidden_size)
    if mm_hidden != clip.hidden_size:
        raise ValueError(
            f"{where}: mm_hidden_size {mm_hidden} but the CLIP folder {clip_dir} has hidden_size {clip.hidden_size}"
        )
    return VisionConfig(
        image_size=clip.image_size,
        patch_size=clip.patch_size,
        hidden_size=clip.hidden_size,
        intermediate_size=clip.intermediate_size,
        num_hidden_layers=clip.num_hidden_layers,
        num_attention_heads=clip.num_attention_heads,
        hidden_act=clip.hidden_act,
        layer_norm_eps=clip.layer_norm_eps,
        feature_layer=int(hf.get("mm_vision_select_layer", -2)),
        drop_cls=feature == "patch",
    )


def projector_kind(hf: Mapping[str, Any], shapes: Shapes, where: str) -> str:
    """ "linear" or "mlp2x_gelu": the config's mm_projector_type (LLaVA's default "linear"), checked on the keys."""
    kind = hf.get("mm_projector_type", "linear")
    from_keys = "mlp2x_gelu" if "model.mm_projector.0.weight" in shapes else "linear"
    if kind != from_keys:
        raise ValueError(f"{where}: mm_projector_type {kind!r} but the weights hold a {from_keys!r} projector")
    return kind


def clip_preprocess(clip_dir: Path, clip_size: int, sam_size: int) -> PreprocessConfig:
    """Pixel constants: CLIP mean/std from the folder's preprocessor_config.json if present; SAM's are fixed."""
    base = PreprocessConfig(clip_size=clip_size, sam_size=sam_size)
    path = Path(clip_dir) / "preprocessor_config.json"
    if path.is_file():
        pre = read_json(path, "CLIP preprocessor")
        base.clip_mean = [float(x) for x in pre.get("image_mean", base.clip_mean)]
        base.clip_std = [float(x) for x in pre.get("image_std", base.clip_std)]
    return base


def model_config_from_release(
    hf: Mapping[str, Any],
    shapes: Shapes,
    clip_dir: Path,
    where: str,
    decoder_heads: int = SAM_DECODER_HEADS,
) -> ModelConfig:
    """Our config for a released LaSagnA/LISA folder. `hf`: its config.json; `shapes`: its weight names/shapes."""
    if hf.get("model_type") != "llava":
        raise ValueError(f"{where}: model_type {hf.get('model_type')!r}, expected 'llava' (a LaSagnA/LISA release)")
    llm = llm_config_from_hf(hf, where)
    vision = vision_config_from_clip(clip_dir, hf, where)
    sam = sam_config_from_shapes(shapes, "model.visual_model.", decoder_heads)
    out_dim = hf.get("out_dim", sam.prompt_dim)
    if out_dim != sam.prompt_dim:
        raise ValueError(f"{where}: out_dim {out_dim} but SAM's prompt width in the weights is {sam.prompt_dim}")
    return ModelConfig(
        vision=vision,
        llm=llm,
        sam=sam,
        preprocess=clip_preprocess(clip_dir, vision.image_size, sam.image_size),
        projector=projector_kind(hf, shapes, where),
        use_im_start_end=bool(hf.get("mm_use_im_start_end", False)),
        tokenization="llama431",
        default_decoder="free",
    )
