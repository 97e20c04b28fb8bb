"""Build what the loop needs from a TrainConfig: model + tokenizer, and the training mixture + collate."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import load_checkpoint
from ..config import ModelConfig, from_dict, preset, to_dict
from ..data.collate import Collator
from ..data.mixture import Mixture
from ..data.records import Source
from ..model.lasagna import LasagnaModel
from ..tokenization import build_plain_tokenizer
from ..tokens import token_ids
from .config import TrainConfig


def shapeworld_sources(
    split: str, size: int, refer_no_target_rate: float | None = None, refer_twins: bool = False
) -> dict[str, Source]:
    from ..shapeworld import ShapeWorldReasoning, ShapeWorldReferring, ShapeWorldSemantic, ShapeWorldVQA
    from ..shapeworld.referring import NO_TARGET_RATE

    rate = NO_TARGET_RATE if refer_no_target_rate is None else refer_no_target_rate
    return {
        "shapeworld-semantic": ShapeWorldSemantic(split, size),
        "shapeworld-referring": ShapeWorldReferring(split, size, no_target_rate=rate, twins=refer_twins),
        "shapeworld-reasoning": ShapeWorldReasoning(split, size),
        "shapeworld-vqa": ShapeWorldVQA(split, size),
    }


def training_sources(cfg: TrainConfig, split: str = "train") -> dict[str, Source]:
    if cfg.data.dataset == "shapeworld":
        return shapeworld_sources(split, cfg.data.image_size, cfg.data.refer_no_target_rate, cfg.data.refer_twins)
    from ..data.sources import open_source

    names = sorted({n for mapping in cfg.data.mixture.dataset_weights.values() for n in mapping})
    if not names:
        raise ValueError("data.mixture.dataset_weights must name the datasets to train on")
    unused = sorted(set(cfg.data.sources) - set(names))
    if unused:
        raise ValueError(f"data.sources names {unused}, which data.mixture.dataset_weights does not: {names}")
    sources = {}
    for name in names:
        options = dict(cfg.data.sources.get(name) or {})
        sources[name] = open_source(name, options.pop("root", cfg.data.root), split, **options)
    return sources


def _corpus(cfg: TrainConfig) -> list[str]:
    """Text the plain tokenizer is fitted on: formatted training samples (deterministic) and every class name."""
    from ..shapeworld import classes

    count = cfg.tokenizer_corpus
    mixture = Mixture(training_sources(cfg), cfg.data.mixture, seed=cfg.seed + 1_000_003, length=count)
    texts = list(classes("test-open"))
    for index in range(count):
        for conv in mixture[index].conversations:
            texts += [conv.question, conv.answer]
    return texts


def apply_overrides(model_cfg: ModelConfig, overrides: dict) -> ModelConfig:
    """Dotted ModelConfig fields -> a new, strictly re-validated config."""
    data = to_dict(model_cfg)
    for key, value in overrides.items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise KeyError(f"model_overrides: {key!r} does not name a ModelConfig field")
            node = node[p]
        if leaf not in node:
            raise KeyError(f"model_overrides: {key!r} does not name a ModelConfig field")
        node[leaf] = value
    return from_dict(ModelConfig, data)


def model_config_of(cfg: TrainConfig) -> ModelConfig:
    """The model a run trains, read before anything is built (a fresh preset's vocabulary is not yet known).

    `model_overrides` apply to init_from's config as to a preset's; one that changes a weight's shape or name makes
    the strict load of init_from's weights fail."""
    if cfg.init_from:
        from ..checkpoint import read_config

        return apply_overrides(read_config(Path(cfg.init_from)), cfg.model_overrides)
    return apply_overrides(preset(cfg.model_preset), cfg.model_overrides)


def build_model_and_tokenizer(cfg: TrainConfig, run_dir: Path | None = None):
    """(model, tokenizer) of `build_run`: the paper's model alone."""
    model, tokenizer, _ = build_run(cfg, run_dir)
    return model, tokenizer


def build_run(cfg: TrainConfig, run_dir: Path | None = None):
    """(model, tokenizer, judges or None) from `init_from`, or a fresh preset with a plain tokenizer fitted on the
    training text. The judges are init_from's with those `cfg.judges.add` asks for added fresh; the package
    `lasagna.judges` is imported only when a run has some.

    The tokenizer is kept in run_dir/tokenizer so a resumed run or an export reuses it instead of refitting.
    """
    saved = Path(run_dir) / "tokenizer" if run_dir is not None else None
    if cfg.init_from:
        loaded = load_checkpoint(cfg.init_from, cfg=model_config_of(cfg))
        model, tokenizer = loaded.model, loaded.tokenizer
        judges = None
        if loaded.judges.any or cfg.judges.add.any:
            from ..judges import Judges

            judges = Judges.from_state(model, loaded.judges, loaded.judges_state, cfg.init_from)
            judges.add(cfg.judges.add, seed=cfg.seed)  # why: a judge init_from lacks starts fresh
        if saved is not None and not saved.exists():
            tokenizer.save_pretrained(str(saved))
        return model, tokenizer, judges
    if cfg.data.dataset != "shapeworld":
        raise ValueError("training from scratch builds a ShapeWorld tokenizer; set init_from for other data")
    if saved is not None and saved.exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(saved))
    else:
        from ..shapeworld import classes

        # held-out names are left out: they stay word sequences, the only form a never-seen name can take
        names = [c for c in classes("train") if " " in c] if cfg.tokenizer_whole_names else []
        tokenizer = build_plain_tokenizer(_corpus(cfg), vocab_size=cfg.tokenizer_vocab, whole_phrases=names)
    model_cfg = model_config_of(cfg)
    model_cfg.llm.vocab_size = len(tokenizer)
    model = LasagnaModel(model_cfg, seed=cfg.seed)  # why: each part's init independent of the vocabulary size
    ids = token_ids(tokenizer)
    model.set_token_ids(ids.ins, ids.pad, ids.no_ins)
    if saved is not None and not saved.exists():
        tokenizer.save_pretrained(str(saved))
    judges = None
    if cfg.judges.add.any:
        from ..judges import Judges

        judges = Judges.for_model(model, cfg.judges.add, seed=cfg.seed)
    return model, tokenizer, judges


class RunWeights:
    """The weights a run trains and saves as one state dict: the model's and, beside them under their own names,
    its judges' (the names a checkpoint folder holds them under)."""

    def __init__(self, model, judges=None):
        self.parts = [model] if judges is None else [model, judges]

    def named_parameters(self):
        for part in self.parts:
            yield from part.named_parameters()

    def parameters(self):
        for _, p in self.named_parameters():
            yield p

    def state_dict(self) -> dict:
        return {k: v for part in self.parts for k, v in part.state_dict().items()}

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        for part in self.parts:
            names = set(part.state_dict())
            part.load_state_dict({k: v for k, v in state.items() if k in names}, strict=strict)


def build_training_set(cfg: TrainConfig, tokenizer, model_cfg: ModelConfig):
    opt = cfg.optim
    length = opt.steps * opt.grad_accum * opt.batch_size * 64  # ample: sampling is with replacement anyway
    mixture = Mixture(training_sources(cfg), cfg.data.mixture, seed=cfg.seed, length=length)
    return mixture, Collator(tokenizer, model_cfg)


def compile_for_training(model: LasagnaModel) -> None:
    """torch.compile, in place, the two parts a stage-1 step spends most in: the LLM's decoder and the mask decoder.

    Sequence lengths change every batch, so the LLM compiles for dynamic shapes at once; the mask decoder compiles
    for the shapes it first meets and generalises those that change (`dynamic=None`), since a fully dynamic compile
    of it failed in inductor on the tiny preset. In-place compilation keeps every state-dict name, so checkpoints do
    not know it happened. Code that should run eager runs under `torch.compiler.set_stance("force_eager")`.
    """
    model.llm.get_decoder().compile(dynamic=True)
    model.sam.mask_decoder.compile(dynamic=None)
