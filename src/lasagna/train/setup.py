"""Build what the loop needs from a TrainConfig: model + tokenizer, and the training mixture + collate."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import load_pretrained
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
    from ..data.shapeworld import ShapeWorldReasoning, ShapeWorldReferring, ShapeWorldSemantic, ShapeWorldVQA
    from ..data.shapeworld.referring import NO_TARGET_RATE

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
    return {name: open_source(name, cfg.data.root, split) for name in names}


def _corpus(cfg: TrainConfig) -> list[str]:
    """Text the plain tokenizer is fitted on: formatted training samples (deterministic) and every class name."""
    from ..data.shapeworld import classes

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
    """From `init_from`, or a fresh preset with a plain tokenizer fitted on the training text.

    The tokenizer is kept in run_dir/tokenizer so a resumed run or an export reuses it instead of refitting.
    """
    saved = Path(run_dir) / "tokenizer" if run_dir is not None else None
    if cfg.init_from:
        from ..checkpoint import read_config

        model_cfg = model_config_of(cfg)
        # why: a verifier added by model_overrides has no weights in init_from; it starts fresh
        saved_cfg = read_config(Path(cfg.init_from))
        fresh = model_cfg.presence_verifier and not saved_cfg.presence_verifier
        fresh_query = model_cfg.query_verifier and not saved_cfg.query_verifier
        model_cfg.presence_verifier = model_cfg.presence_verifier and not fresh
        model_cfg.query_verifier = model_cfg.query_verifier and not fresh_query
        model, tokenizer = load_pretrained(cfg.init_from, cfg=model_cfg)
        if fresh:
            model.add_verifier(seed=cfg.seed)
        if fresh_query:
            model.add_query_verifier(seed=cfg.seed)
        if saved is not None and not saved.exists():
            tokenizer.save_pretrained(str(saved))
        return model, tokenizer
    if cfg.data.dataset != "shapeworld":
        raise ValueError("training from scratch builds a ShapeWorld tokenizer; set init_from for other data")
    if saved is not None and saved.exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(saved))
    else:
        from ..data.shapeworld import classes

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
    return model, tokenizer


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
