"""Typed configuration: model shapes, preprocessing constants and the named presets.

YAML files and checkpoint `config.json` files are these dataclasses serialized; `from_dict` is strict so a typo in a
config file is an error that names the key, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

QUANTIZE_MODES = ("8bit", "4bit")
"""The LLM quantizations lasagna loads through bitsandbytes: 8bit is LLM.int8 (Linear8bitLt), 4bit NF4 (Linear4bit).
Here, at the bottom of the layers, so that the command line lists them without importing torch."""


@dataclass
class VisionConfig:
    """CLIP vision tower feeding the LLM. LLaVA reads layer -2 and drops the CLS token."""

    image_size: int = 224
    patch_size: int = 14
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    feature_layer: int = -2
    drop_cls: bool = True
    # Pass the features through the tower's own post_layernorm (no new weights). The released model does not; a
    # tower trained from scratch does, because its raw residual stream reaches norms in the thousands.
    feature_norm: bool = False
    # Channels of stride-2 3x3 convolutions that replace the patch convolution (model/stem.py); empty = CLIP's own.
    conv_stem: list[int] = field(default_factory=list)
    # Average k x k neighbouring patches before the projector (CLS kept alone): a finer patch grid, for the
    # tower's sake, without more image tokens in the LLM. 1 = LLaVA's one token per patch.
    feature_pool: int = 1
    # How a k x k block becomes one token: `mean` averages it; `concat` sets its k*k features side by side
    # (space-to-depth), so the projector still sees each patch (CLS is tiled to the same width).
    feature_pool_mode: str = "mean"

    def __post_init__(self) -> None:
        if self.feature_pool < 1 or self.grid % self.feature_pool:
            raise ValueError(
                f"vision.feature_pool {self.feature_pool} must be >= 1 and divide the {self.grid}-patch grid"
            )
        if self.feature_pool_mode not in ("mean", "concat"):
            raise ValueError(f"vision.feature_pool_mode must be mean or concat, got {self.feature_pool_mode!r}")

    @property
    def feature_dim(self) -> int:
        """The width of an image token before the projector."""
        return self.hidden_size * (self.feature_pool**2 if self.feature_pool_mode == "concat" else 1)

    @property
    def grid(self) -> int:
        """The side of the tower's patch grid."""
        return self.image_size // self.patch_size

    @property
    def feature_grid(self) -> int:
        """The side of the grid of image tokens the LLM gets (after feature_pool)."""
        return self.grid // self.feature_pool

    @property
    def cls_tokens(self) -> int:
        """Image tokens before the grid's: CLS, when it is kept."""
        return 0 if self.drop_cls else 1

    @property
    def num_features(self) -> int:
        """Image tokens the LLM gets: the grid's, after CLS when it is kept."""
        return self.feature_grid**2 + self.cls_tokens


@dataclass
class LLMConfig:
    """Causal LLM. `arch` names a transformers model type; LLaMA is what the released weights use."""

    arch: str = "llama"
    vocab_size: int = 32007
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False


@dataclass
class SamConfig:
    """SAM image encoder, prompt encoder and mask decoder sizes (ViT-H by default)."""

    image_size: int = 1024
    patch_size: int = 16
    hidden_size: int = 1280
    num_hidden_layers: int = 32
    num_attention_heads: int = 16
    mlp_dim: int = 5120
    window_size: int = 14
    global_attn_indexes: list[int] = field(default_factory=lambda: [7, 15, 23, 31])
    prompt_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_num_layers: int = 2
    decoder_num_heads: int = 8
    num_multimask_outputs: int = 3
    conv_stem: list[int] = field(default_factory=list)  # as VisionConfig.conv_stem; empty = SAM's patch convolution
    stem_skips: bool = False  # the mask decoder's upscaling also reads the stem's finer maps (model/sam.py)

    @property
    def embedding_size(self) -> int:
        return self.image_size // self.patch_size


@dataclass
class PreprocessConfig:
    """Pixel constants for the two image paths; they travel with the checkpoint.

    CLIP: shortest edge -> `clip_size` (bicubic), centre crop, /255, normalise. SAM: longest side -> `sam_size`
    (bilinear), normalise in 0-255 space, zero-pad bottom/right to a square.
    """

    clip_size: int = 224
    clip_mean: list[float] = field(default_factory=lambda: [0.48145466, 0.4578275, 0.40821073])
    clip_std: list[float] = field(default_factory=lambda: [0.26862954, 0.26130258, 0.27577711])
    sam_size: int = 1024
    sam_mean: list[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])
    sam_std: list[float] = field(default_factory=lambda: [58.395, 57.12, 57.375])


@dataclass
class ModelConfig:
    """The whole LaSagnA model. Defaults are the released LaSagnA-7B."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    sam: SamConfig = field(default_factory=SamConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    projector: Literal["linear", "mlp2x_gelu"] = "linear"
    # A learned vector per image token, added after the projector. The released model has none: CLIP's features
    # carry where each patch is. A tower pretrained from scratch on patch labels keeps little of it
    # (docs/history.md), and the LLM's 1-D rotary positions do not say which column a token is in.
    image_positions: bool = False
    # Where each image token is: a fixed 2-D sine-cosine code of its column and row (`model.lasagna.grid_code`, this
    # wide, a multiple of 4) through a learned linear map started at zero, added after the projector; 0: none (the
    # released model). Unlike `image_positions` the map is shared by all tokens: "further left" is learned once.
    image_grid_code: int = 0
    use_im_start_end: bool = True
    # "llama431": reproduce transformers 4.31's slow LLaMA tokenizer ids (released weights); "plain": our tokenizers.
    tokenization: Literal["llama431", "plain"] = "llama431"
    # Decoder used when the caller does not choose: released weights answer in free order.
    default_decoder: Literal["free", "template"] = "free"
    # Pixels whose best present-class logit is below this stay unlabelled in the semantic map.
    mask_threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.image_grid_code < 0 or self.image_grid_code % 4:
            raise ValueError(f"image_grid_code must be 0 or a positive multiple of 4, got {self.image_grid_code}")


@dataclass
class JudgesConfig:
    """Which of the modules that are not the paper's (`lasagna.judges`) a checkpoint has beside its model.

    presence_verifier: a second opinion on each class slot's `<ins>`/`<no_ins>`; query_verifier: the same for the
    decisions of referring and reasoning queries; instance_picker: which pieces of a query slot's mask its phrase
    means."""

    presence_verifier: bool = False
    query_verifier: bool = False
    instance_picker: bool = False

    @property
    def any(self) -> bool:
        return self.presence_verifier or self.query_verifier or self.instance_picker


MODEL_PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        vision=VisionConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
        ),
        llm=LLMConfig(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=512,
        ),
        sam=SamConfig(
            image_size=64,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            mlp_dim=64,
            window_size=4,
            global_attn_indexes=[1],
            prompt_dim=32,
            decoder_mlp_dim=64,
            decoder_num_heads=2,
        ),
        preprocess=PreprocessConfig(clip_size=32, sam_size=64),
        tokenization="plain",
        default_decoder="template",
    ),
    "shapeworld-small": ModelConfig(
        vision=VisionConfig(
            image_size=128,
            patch_size=16,
            hidden_size=192,
            intermediate_size=768,
            num_hidden_layers=4,
            num_attention_heads=3,
            drop_cls=False,  # stage 0 teaches CLS which classes the image holds (train/encoders.py)
            feature_norm=True,
            conv_stem=[24, 48, 96, 192],  # from scratch, shape is learned through convolutions (model/stem.py)
        ),
        llm=LLMConfig(
            vocab_size=1024,
            hidden_size=256,
            intermediate_size=688,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=1024,
        ),
        sam=SamConfig(
            image_size=128,
            patch_size=8,
            hidden_size=128,
            num_hidden_layers=4,
            num_attention_heads=4,
            mlp_dim=512,
            window_size=8,
            global_attn_indexes=[1, 3],
            prompt_dim=128,
            decoder_mlp_dim=512,
            decoder_num_heads=4,
            conv_stem=[32, 64, 128],
        ),
        preprocess=PreprocessConfig(clip_size=128, sam_size=128),
        projector="mlp2x_gelu",
        tokenization="plain",
        default_decoder="template",
    ),
    "lasagna-7b": ModelConfig(),
}


class ConfigError(ValueError, TypeError):
    """A config value of the wrong type or shape, named by its dotted path (a ValueError like every bad input; a
    TypeError too, for callers that catch that)."""


def preset(name: str) -> ModelConfig:
    """A fresh copy of a named preset."""
    if name not in MODEL_PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {sorted(MODEL_PRESETS)}")
    return from_dict(ModelConfig, to_dict(MODEL_PRESETS[name]))


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from `data`, recursing into nested dataclasses; unknown keys are an error."""
    if not isinstance(data, dict):
        raise ConfigError(f"config{where or ' root'}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise KeyError(f"config{where}: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            value = from_dict(kind, value, f"{where}.{key}")
        else:
            value = _check_value(kind, value, f"{where}.{key}")
        kwargs[key] = value
    return cls(**kwargs)


def _check_value(kind: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin is Literal:
        if value not in typing.get_args(kind):
            raise ValueError(f"config{where}: {value!r} is not one of {list(typing.get_args(kind))}")
        return value
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in typing.get_args(kind):
            return None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
        return _check_value(kind, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config{where}: expected a list, got {value!r}")
        return list(value) if origin is list else tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config{where}: expected a mapping, got {value!r}")
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (int, float, str, bool) and not isinstance(value, kind):
        raise ConfigError(f"config{where}: expected {kind.__name__}, got {value!r}")
    if kind is int and isinstance(value, bool):
        raise ConfigError(f"config{where}: expected int, got {value!r}")
    return value


def save_json(cfg: Any, path: Path) -> None:
    Path(path).write_text(json.dumps(to_dict(cfg), indent=2) + "\n")


def load_json(cls: type, path: Path) -> Any:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"config file {path} is not valid JSON: {e}") from None
    return from_dict(cls, data)
