"""JSON descriptions for clients: the loaded model (`GET /v1/model`) and class lists to pick from (`/v1/classlists`)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..api import Lasagna, default_model_dir
from ..checkpoint import read_header
from ..data.sources.classnames import ADE20K_150, COCO_STUFF_171
from .limits import ServeSettings


def model_vocabulary(folder: str | Path | None) -> tuple[str, ...] | None:
    """The class names a checkpoint says its model was trained on (`checkpoint.Header.vocabulary`: the embedded
    model's ShapeWorld names); None for an open-vocabulary model."""
    header = read_header(Path(folder) if folder is not None else default_model_dir())
    return None if header.vocabulary is None else tuple(header.vocabulary)


def describe(model: Lasagna, settings: ServeSettings) -> dict:
    """Name, sizes of the three parts, decoding default, tokenizer size, add-ons, limits, vocabulary."""
    cfg = model.config
    param = next(model.model.parameters())
    return {
        "name": settings.model_name,
        "sizes": {
            "vision": _pick(cfg.vision, "image_size", "patch_size", "hidden_size", "num_hidden_layers"),
            "llm": _pick(cfg.llm, "arch", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"),
            "sam": _pick(cfg.sam, "image_size", "patch_size", "hidden_size", "num_hidden_layers", "prompt_dim"),
            "parameters": sum(p.numel() for p in model.model.parameters()),
        },
        "default_decoder": cfg.default_decoder,
        "tokenizer_size": len(model.tokenizer),
        "add_ons": model.info()["judges"],  # the judges beside the paper's model (lasagna.judges)
        "device": str(param.device),
        "dtype": str(param.dtype).removeprefix("torch."),
        "batching": {"max_batch": settings.max_batch, "batch_timeout": settings.batch_timeout},
        "limits": asdict(settings.limits),
        "vocabulary": list(settings.vocabulary) if settings.vocabulary is not None else None,
    }


def _pick(section, *names: str) -> dict:
    return {n: getattr(section, n) for n in names}


def class_lists(settings: ServeSettings) -> list[dict]:
    """The lists the web page offers: the model's vocabulary (when known), ADE20K-150, COCO-Stuff-171."""
    out = []
    if settings.vocabulary:
        out.append({"id": "model", "title": f"model vocabulary ({len(settings.vocabulary)})"})
        out[-1]["classes"] = list(settings.vocabulary)
    out.append({"id": "ade20k-150", "title": "ADE20K (150)", "classes": list(ADE20K_150)})
    out.append({"id": "coco-stuff-171", "title": "COCO-Stuff (171)", "classes": list(COCO_STUFF_171)})
    return out
