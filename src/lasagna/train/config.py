"""Training configuration: one dataclass tree, serialised as YAML, with dotted command-line overrides."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..config import JudgesConfig, from_dict, to_dict
from ..data.mixture import MixtureConfig
from ..losses import LossConfig
from ..model.build import TrainableConfig
from ..shapeworld.referring import EXPRESSIONS_PER_SCENE
from .decoder import DecoderPretrainConfig
from .encoders import EncoderPretrainConfig


@dataclass
class OptimConfig:
    """The paper: AdamW lr 3e-4, betas (0.9, 0.95), no weight decay, 100 warmup steps, linear decay, clip 1.0."""

    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.0
    warmup_steps: int = 100
    steps: int = 18000
    grad_clip: float = 1.0
    batch_size: int = 2  # images per process per micro-step
    grad_accum: int = 10
    # lr multipliers by parameter-name prefix, e.g. {sam.mask_decoder: 0.1}; the longest matching prefix wins
    lr_scale: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("lr", "weight_decay"):  # why 0 is allowed: a run that must leave weights as they are
            _check_number(f"optim.{name}", getattr(self, name), low=0.0)
        _check_number("optim.grad_clip", self.grad_clip, low=0.0, inclusive=False)
        for name in ("steps", "batch_size", "grad_accum"):
            _check_count(f"optim.{name}", getattr(self, name), 1)
        _check_count("optim.warmup_steps", self.warmup_steps, 0)
        if len(self.betas) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {self.betas!r}")


def _check_number(name: str, value: float, low: float, inclusive: bool = True) -> None:
    """A finite number at or above `low` (above it if not `inclusive`), or an error naming the field."""
    ok = math.isfinite(value) and (value >= low if inclusive else value > low)
    if not ok:
        bound = f">= {low}" if inclusive else f"> {low}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def _check_count(name: str, value: int, low: int) -> None:
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


@dataclass
class DataConfig:
    """What to train on. `dataset: shapeworld` needs no files; `mixed` opens the named datasets under `root`."""

    dataset: str = "shapeworld"
    root: str | None = None
    # per dataset of the mixture, its reader's options: `root` (overrides the one above: a folder, COCO or JSON-lines
    # dataset lives apart from the paper's), `layout`, `background`, ... e.g. {folder: {root: /data/fruit}}
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    image_size: int = 128  # ShapeWorld render size
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    num_workers: int = 0
    # ShapeWorld only: the share of training referring expressions without a target; None keeps the dataset's 0.15.
    # Evaluation always uses the dataset's own expressions.
    refer_no_target_rate: float | None = None
    # ShapeWorld only: each relation and extreme comes with its opposite ("left of" / "right of"), about the same
    # objects with another answer, in the same sample (shapeworld.referring_items). Up to 8 expressions a scene
    # then: mixture.tasks.referring.max_expressions must keep them all (8).
    refer_twins: bool = False


@dataclass
class EvalConfig:
    every: int = 0  # optimizer steps between evaluations; 0 = only at the end
    split: str = "val"
    limit: int = 50
    chunk_size: int = 16


@dataclass
class JudgesTraining:
    """The judges (`lasagna.judges`, not the paper's) in a run: init_from's are kept, `add` adds fresh ones.

    The verifiers read detached inputs, so training them beside the model moves nothing else; their fusions are fit
    after the last step (`calibrate_scenes`); the instance picker trains only on answers (`lasagna train-picker`)."""

    add: JudgesConfig = field(default_factory=JudgesConfig)
    trainable: bool = True  # the verifiers train on each batch
    presence_weight: float = 1.0  # weight of the presence verifier's loss in the total
    query_weight: float = 1.0  # weight of the query verifier's loss

    def __post_init__(self) -> None:
        for name in ("presence_weight", "query_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"judges.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class TrainConfig:
    out_dir: str = "runs/shapeworld-small"
    seed: int = 0
    model_preset: str = "shapeworld-small"
    model_overrides: dict[str, Any] = field(default_factory=dict)  # dotted ModelConfig fields, e.g. vision.patch_size
    init_from: str | None = None  # a checkpoint folder of ours (its tokenizer is used); else a fresh preset
    judges: JudgesTraining = field(default_factory=JudgesTraining)
    # scenes of eval.split the judges' fusions are fit on after the last step (judges/calibrate.py); 0 = none
    calibrate_scenes: int = 200
    tokenizer_vocab: int = 1024  # plain tokenizer size when training from scratch
    tokenizer_corpus: int = 3000  # formatted training samples the plain tokenizer is fitted on
    tokenizer_whole_names: bool = False  # multi-word training class names become single pieces ("▁red▁circle")
    encoders: EncoderPretrainConfig = field(default_factory=EncoderPretrainConfig)  # stage 0, from scratch only
    decoder: DecoderPretrainConfig = field(default_factory=DecoderPretrainConfig)  # stage 0b, after stage 0
    trainable: TrainableConfig = field(default_factory=TrainableConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    bf16: bool = True
    # bf16 keeps the frozen weights in bf16 (half a 7B model's memory; needs bf16: true); trainable ones stay fp32.
    # The run's own final/ export then holds the bf16 copies; `lasagna export` of a trainable-only checkpoint reads
    # init_from's originals (the same weights at export_dtype bf16).
    frozen_dtype: Literal["fp32", "bf16"] = "fp32"
    gradient_checkpointing: bool = False
    # torch.compile the LLM's decoder and the mask decoder for stage 1's steps (benchmarks/train_step.py, variant d);
    # evaluation and export run them eager. The first steps pay the compilation (about 40 s on 2 CPU cores, more with
    # an empty inductor cache).
    compile: bool = False
    # trainable: checkpoints hold only what trains, and the frozen weights come back from init_from (a 7B
    # checkpoint: 1.15 GB instead of ~30 GB, tools/count_params.py); full: everything (needed from scratch)
    checkpoint_weights: Literal["full", "trainable"] = "full"
    save_every: int = 500
    keep_last: int = 2
    log_every: int = 10
    export_dtype: str = "bf16"


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise KeyError(f"override {key}: {p} is not a section")
    node[parts[-1]] = value


def load_train_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """YAML file (optional) + `a.b=value` overrides (values parsed as YAML) -> TrainConfig, strictly."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"training config not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or err
            raise ValueError(f"{path}: not valid YAML{where}: {problem}") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ValueError(f"override {item!r}: the value is not valid YAML ({err})") from err
        _set_dotted(data, key.strip(), parsed)
    return from_dict(TrainConfig, data)


def check_train_config(cfg: TrainConfig) -> None:
    """Combinations that cannot work, named before any model is built."""
    for name in ("save_every", "keep_last", "log_every"):
        _check_count(name, getattr(cfg, name), 1)
    _check_count("calibrate_scenes", cfg.calibrate_scenes, 0)
    _check_lora(cfg)
    _check_sources(cfg.data.sources)
    for key, value in cfg.optim.lr_scale.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(
                f"optim.lr_scale[{key!r}] must be a positive number, got {value!r} "
                "(on a command line: 'optim.lr_scale={sam.mask_decoder: 0.1}')"
            )
    if cfg.frozen_dtype == "bf16" and not cfg.bf16:
        raise ValueError("frozen_dtype: bf16 needs bf16: true (bf16 weights meet fp32 activations otherwise)")
    rate = cfg.data.refer_no_target_rate
    if rate is not None and cfg.data.dataset != "shapeworld":
        raise ValueError(
            f"data.refer_no_target_rate applies to ShapeWorld only; dataset {cfg.data.dataset!r} brings its own "
            "expressions"
        )
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1):
        raise ValueError(f"data.refer_no_target_rate must be a number in [0, 1], got {rate!r}")
    if cfg.loss.place_weight and cfg.data.dataset != "shapeworld":
        raise ValueError(
            "loss.place_weight applies to ShapeWorld only: its grid is the whole image, which a centre crop of a "
            f"non-square image is not (dataset {cfg.data.dataset!r})"
        )
    if cfg.data.refer_twins and cfg.data.dataset != "shapeworld":
        raise ValueError(
            f"data.refer_twins applies to ShapeWorld only; dataset {cfg.data.dataset!r} brings its own expressions"
        )
    pairs = 2 * EXPRESSIONS_PER_SCENE
    if cfg.data.refer_twins and cfg.data.mixture.tasks.referring.max_expressions < pairs:
        raise ValueError(
            f"data.refer_twins makes up to {pairs} expressions a scene; data.mixture.tasks.referring.max_expressions "
            f"{cfg.data.mixture.tasks.referring.max_expressions} would split twins (set it to {pairs})"
        )
    if cfg.checkpoint_weights == "trainable":
        if not cfg.init_from:
            raise ValueError("checkpoint_weights: trainable needs init_from, where the frozen weights come back from")
        if cfg.encoders.steps or cfg.encoders.from_file or cfg.decoder.steps or cfg.decoder.from_file:
            raise ValueError(
                "checkpoint_weights: trainable needs every frozen weight from init_from; "
                "stage 0/0b (encoders, decoder) change them: use checkpoint_weights: full"
            )


def _check_sources(sources: dict[str, Any]) -> None:
    """data.sources: per dataset a mapping of reader options whose root, if given, is a path (the readers' own
    checks name any other option)."""
    for name, options in sources.items():
        if options is not None and not isinstance(options, dict):
            raise ValueError(
                f"data.sources.{name} must be a mapping of reader options, e.g. {{root: /data/{name}}}, got {options!r}"
            )
        root = (options or {}).get("root")
        if root is not None and not isinstance(root, str):
            raise ValueError(f"data.sources.{name}.root must be a path, got {root!r}")


def _check_lora(cfg: TrainConfig) -> None:
    """LoRA's numbers: a negative rank would mean no LoRA without a word, and alpha 0 adapters that change nothing."""
    lora = cfg.trainable
    if lora.lora_r < 0:
        raise ValueError(f"trainable.lora_r must be an integer >= 0 (0 = no LoRA), got {lora.lora_r!r}")
    if lora.lora_r > 0:
        _check_number("trainable.lora_alpha", lora.lora_alpha, low=0.0, inclusive=False)
        if not 0 <= lora.lora_dropout < 1:
            raise ValueError(f"trainable.lora_dropout must be in [0, 1), got {lora.lora_dropout!r}")


def dump_train_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
