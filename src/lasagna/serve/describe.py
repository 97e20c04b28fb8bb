"""JSON descriptions for clients: the loaded model (`GET /v1/model`) and class lists to pick from (`/v1/classlists`)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..api import Lasagna, default_model_dir
from ..data.sources.classnames import ADE20K_150, COCO_STUFF_171
from .limits import ServeSettings

VOCABULARY_FILE = "classes.txt"
"""A checkpoint folder may list the classes its model knows, one per line, in this file."""


def model_vocabulary(folder: str | Path | None) -> tuple[str, ...] | None:
    """The class names a checkpoint knows: its `classes.txt`, or for the embedded model the ShapeWorld classes it
    was trained on; None when unknown."""
    path = Path(folder) if folder is not None else default_model_dir()
    listed = path / VOCABULARY_FILE
    if listed.is_file():
        names = [line.strip() for line in listed.read_text().splitlines()]
        return tuple(n for n in names if n and not n.startswith("#"))
    if folder is None:
        from ..data.shapeworld.vocab import classes

        return classes("train")
    return None


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
        "add_ons": {
            "presence_verifier": cfg.presence_verifier,
            "query_verifier": cfg.query_verifier,
            "instance_picker": cfg.instance_picker,
        },
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
