"""What runs on the model, in the batcher's worker thread, and how its answers become JSON.

Class lists are batched (`infer.batch.segment_batch`); if a batch fails, its requests run again one at a time so only
the one at fault fails. Queries and chat run one at a time through `Lasagna`.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..api import Lasagna
from ..infer.batch import segment_batch
from ..infer.outputs import result_json
from ..infer.prediction import Prediction
from ..viz import class_color, overlay

log = logging.getLogger("lasagna.serve")


@dataclass
class SegmentJob:
    """A checked request: exactly one of `classes` / `query`."""

    image: np.ndarray
    classes: list[str] | None = None
    query: str | None = None
    chunk_size: int = 16
    decoder: str | None = None


@dataclass
class ChatJob:
    image: np.ndarray
    text: str
    max_new_tokens: int = 256


class ModelWorker:
    """Runs batches of jobs on one loaded model; `run` is the batcher's `RunBatch`."""

    def __init__(self, model: Lasagna):
        self.model = model

    def key(self, job: SegmentJob | ChatJob) -> Hashable | None:
        """Class lists with the same decoder batch together; everything else runs alone."""
        if isinstance(job, SegmentJob) and job.classes is not None:
            return ("classes", job.decoder or self.model.config.default_decoder)
        return None

    def run(self, key: Hashable | None, jobs: list) -> list:
        if key is not None and len(jobs) > 1:
            try:
                preds = segment_batch(
                    self.model.engine,
                    [j.image for j in jobs],
                    [j.classes for j in jobs],
                    [j.chunk_size for j in jobs],
                    key[1],
                )
                for pred in preds:  # what `Lasagna.segment` adds to a class list's answer
                    pred.warnings += self.model.vocabulary_warnings([c.name for c in pred.classes])
                return preds
            except Exception:
                log.warning("a batch of %d requests failed; running them one at a time", len(jobs), exc_info=True)
        return [self._one(job) for job in jobs]

    def _one(self, job: SegmentJob | ChatJob):
        try:
            if isinstance(job, ChatJob):
                return self.model.chat(job.image, job.text, max_new_tokens=job.max_new_tokens)
            if job.classes is not None:
                return self.model.segment(
                    job.image, classes=job.classes, chunk_size=job.chunk_size, decoder=job.decoder
                )
            return self.model.segment(job.image, query=job.query)
        except Exception as err:  # why: returned, not raised, so it reaches only this job's caller
            return err


def segment_response(
    pred: Prediction,
    image: np.ndarray,
    name: str,
    query: bool,
    with_overlay: bool = False,
    with_label_map: bool = False,
    threshold: float = 0.0,
) -> dict:
    """`lasagna segment`'s result.json, plus `warnings`, `colors` (name -> the overlay's "#rrggbb") and, when
    asked, `overlay_png` / `label_map_png` (base64 PNGs; the label map holds each pixel's index in the class list,
    or target number for a query, and 255 where unlabelled; `threshold` as in `Prediction.semantic_map`)."""
    body = result_json(pred, name)
    if query:
        masks = [(f"target {i + 1}", m) for i, m in enumerate(pred.masks)]
        absent = [] if masks else ["(no target)"]
    else:
        masks = [(c.name, c.mask) for c in pred.classes if c.present]
        absent = pred.absent
    body["warnings"] = warnings(pred, query)
    body["colors"] = {n: "#{:02x}{:02x}{:02x}".format(*class_color(n)) for n, _ in masks}
    if with_overlay:
        body["overlay_png"] = png_base64(overlay(image, masks, absent))
    if with_label_map:
        body["label_map_png"] = png_base64(Image.fromarray(label_map(pred, query, threshold)))
    return body


def label_map(pred: Prediction, query: bool, threshold: float = 0.0) -> np.ndarray:
    """(H, W) uint8: class index (targets in answer order for a query), 255 unlabelled."""
    if query:
        out = np.full(pred.image_size, 255, dtype=np.uint8)
        for i, mask in enumerate(pred.masks):
            out[mask] = i
        return out
    index = pred.semantic_map(threshold=threshold)
    return np.where(index < 0, 255, index).astype(np.uint8)


def warnings(pred: Prediction, query: bool) -> list[str]:
    """The prediction's own warnings (names outside the model's vocabulary, empty masks), then the server's."""
    if query:
        return [*pred.warnings, *([] if pred.masks else ["the model found no target for the query"])]
    out = list(pred.warnings)
    out += [
        f"the model's answer never named {c.name!r}, so it is reported absent" for c in pred.classes if not c.answered
    ]
    out += [f"the answer named {text!r}, which is not in the class list" for text in pred.unmatched]
    return out


def png_base64(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
