"""Dataset readers ("sources"): parse files into records, no tensors, no randomness.

`SOURCES` maps a dataset name to its constructor `(root=None, split=...) -> Source`; `open_source` looks a name up.
The data root is `root` if given, else the LASAGNA_DATA environment variable; each reader module documents its tree.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lasagna.data.records import Source
from lasagna.data.sources.llava import llava_instruct
from lasagna.data.sources.pascal import pascal_context_59, pascal_context_459, pascal_voc_20
from lasagna.data.sources.reasonseg import reasonseg
from lasagna.data.sources.refer import grefcoco, refclef, refcoco, refcoco_plus, refcocog
from lasagna.data.sources.semantic import ade20k, cityscapes, cocostuff, mapillary

SOURCES: dict[str, Callable[..., Source]] = {
    "ade20k": ade20k,
    "cocostuff": cocostuff,
    "cityscapes": cityscapes,
    "mapillary": mapillary,
    "pascal-context-59": pascal_context_59,
    "pascal-context-459": pascal_context_459,
    "pascal-voc-20": pascal_voc_20,
    "refcoco": refcoco,
    "refcoco+": refcoco_plus,
    "refcocog": refcocog,
    "refclef": refclef,
    "grefcoco": grefcoco,
    "reasonseg": reasonseg,
    "llava-instruct": llava_instruct,
}


def open_source(name: str, root: str | Path | None = None, split: str | None = None) -> Source:
    """Build the named source; `split=None` takes the constructor's default split."""
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(SOURCES))}")
    constructor = SOURCES[name]
    return constructor(root) if split is None else constructor(root, split)


__all__ = ["SOURCES", "open_source"]
