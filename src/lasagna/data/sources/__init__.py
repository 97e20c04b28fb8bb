"""Dataset readers ("sources"): parse files into records, no tensors, no randomness.

`SOURCES` maps a dataset name to its constructor `(root=None, split=..., **options) -> Source`; `open_source` looks a
name up. The data root is `root` if given, else the LASAGNA_DATA environment variable; each reader module documents
its tree. The paper's datasets sit in their official trees or in LISA's (`layout`, see base.py); a user's own data
comes as a folder of label PNGs ("folder"), a COCO file ("coco", "coco-referring") or JSON lines ("jsonl").

`SCANS` holds, for the user formats, a function that returns the source of the usable part together with every
problem found (each naming its file), which `lasagna data check` prints; the constructors raise on those problems.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lasagna.data.records import Source
from lasagna.data.sources.base import Problem
from lasagna.data.sources.coco import coco, coco_referring, scan_coco, scan_coco_referring
from lasagna.data.sources.folder import checked_folder, folder
from lasagna.data.sources.jsonl import jsonl, scan_jsonl
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
    "folder": folder,
    "coco": coco,
    "coco-referring": coco_referring,
    "jsonl": jsonl,
}
SCANS: dict[str, Callable[..., tuple[Source | None, list[Problem]]]] = {
    "folder": checked_folder,
    "coco": scan_coco,
    "coco-referring": scan_coco_referring,
    "jsonl": scan_jsonl,
}


def reader_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The keyword options the named reader takes, checked. `layout` is dropped for a reader with one tree (its
    files sit in the same place in every layout); any other option it does not take is an error naming its options.
    """
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(SOURCES))}")
    params = inspect.signature(SOURCES[name]).parameters
    known = [p for p in params if p not in ("root", "split")]
    options = {k: v for k, v in options.items() if not (k == "layout" and k not in params)}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"dataset {name!r} takes no option {unknown}; its options: {', '.join(known) or 'none'}")
    return options


def open_source(name: str, root: str | Path | None = None, split: str | None = None, **options: Any) -> Source:
    """Build the named source; `split=None` takes the constructor's default split; `options` are the reader's own
    keyword arguments (`layout`, `background`, ...)."""
    options = reader_options(name, options)
    constructor = SOURCES[name]
    return constructor(root, **options) if split is None else constructor(root, split, **options)


__all__ = ["SCANS", "SOURCES", "open_source", "reader_options"]
