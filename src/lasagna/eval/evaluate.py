"""`lasagna eval`: run a model over a dataset split and report the paper's metrics.

Semantic sources: every image is queried with the split's full class list (chunked), the per-class masks are merged
into a label map (pixels below threshold stay unlabelled, which counts as wrong), and SemanticIoU + PresenceAccuracy
are accumulated; classes that are held out in ShapeWorld's open split also get their own mIoU. Referring sources:
every expression is asked with the canonical template; the union of its `<ins>` masks is compared with the union of
its targets (ReferIoU), and "any <ins>" is compared with "has a target" (NoTargetAccuracy). Reasoning sources: each
image's first query, asked as the released code asks it, against its target (ReferIoU: gIoU and cIoU).
Work is split across processes by index (rank::world) and metric states are summed with `reduce`. With a
`PredictionWriter` (`save_preds`) every answer is also written to disk, in the layout `eval.preds` describes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.records import IGNORE_LABEL, ReasonRecord, ReferRecord, SemanticRecord, Source
from ..prompts import IMAGE_PREFIX, reasoning_question, single_class_question
from .metrics import NoTargetAccuracy, PresenceAccuracy, ReferIoU, SemanticIoU
from .preds import PredictionWriter
from .report import per_class_rows


def open_eval_sources(dataset: str, split: str, root: str | None = None, **options) -> dict[str, Source]:
    """The split's source of each task: ShapeWorld's three, or the named dataset's one (`options`: its reader's)."""
    if dataset == "shapeworld":
        from ..shapeworld import ShapeWorldReasoning, ShapeWorldReferring, ShapeWorldSemantic

        return {
            "semantic": ShapeWorldSemantic(split),
            "referring": ShapeWorldReferring(split),
            "reasoning": ShapeWorldReasoning(split),
        }
    from ..data.sources import SOURCES, open_source

    if dataset not in SOURCES:  # why: the readers' own message lists theirs, which lack the built-in ShapeWorld
        raise ValueError(f"unknown dataset {dataset!r}; known datasets: shapeworld, {', '.join(sorted(SOURCES))}")

    source = open_source(dataset, root, split, **options)
    return {source.task: source}


def _reduce_metric(metric, reduce: Callable | None) -> None:
    if reduce is None:
        return
    total = reduce(torch.from_numpy(metric.state().astype(np.float64)), reduction="sum")
    metric.reset()
    metric.add_state(total.numpy().astype(metric.state().dtype))


def _single_class_prediction(lasagna, image: np.ndarray, classes: list[str]):
    """LISA-style: one query per class; a class is present when its answer carries a non-empty mask."""
    from ..infer.prediction import ClassResult, Prediction

    results, logits = [], []
    for name in classes:
        question = single_class_question(name).removeprefix(IMAGE_PREFIX)
        pred = lasagna.engine.segment_query(image, question)
        mask = _union(pred.masks, image.shape[:2])
        present = bool(mask.any())
        results.append(ClassResult(name, present, float(present), mask if present else None))
        if present:
            logits.append(pred.logits.max(0).values)
    stacked = torch.stack(logits) if logits else None
    return Prediction(image_size=image.shape[:2], classes=results, logits=stacked)


def evaluate_semantic(
    lasagna,
    source: Source,
    indices,
    chunk_size: int,
    decoder=None,
    held_out=(),
    progress=True,
    single_class=False,
    present_only=False,
    merge="score",
    writer: PredictionWriter | None = None,
):
    """`present_only` asks each image only for the classes its label map holds: the mask quality a model would reach
    if it recognised every class perfectly (an upper bound that separates masks from recognition). `merge` is how
    overlapping masks become one label map ("score" or "logit", see `Prediction.semantic_map`). `writer` saves each
    answer with the label map scored and its GT."""
    if merge not in ("score", "logit"):
        raise ValueError(f"merge must be 'score' or 'logit', got {merge!r}")
    first = source[indices[0]] if len(indices) else source[0]
    classes = list(first.classes)
    iou = SemanticIoU(len(classes))
    presence = PresenceAccuracy()
    unanswered = 0
    held = [i for i, c in enumerate(classes) if c in set(held_out)]
    if writer is not None:
        writer.write_run(classes=classes, merge=merge, present_only=present_only, single_class=single_class)
    for index in tqdm(indices, desc=f"eval {source.name}", disable=not progress):
        record: SemanticRecord = source[index]
        image, gt = record.load_image(), record.load_label()
        present = {classes[i] for i in np.unique(gt) if i != IGNORE_LABEL}
        asked = [c for c in classes if c in present] if present_only else classes
        if not asked:
            continue  # every pixel ignored: nothing to ask, nothing to score
        if single_class:
            pred = _single_class_prediction(lasagna, image, asked)
        else:
            pred = lasagna.segment(image, classes=asked, chunk_size=chunk_size, decoder=decoder)
        unanswered += sum(not c.answered for c in pred.classes) + len(pred.unmatched)
        iou.update(pred.semantic_map(classes, by_score=merge == "score"), gt)
        if writer is not None:
            writer.semantic(record.image_id, image, pred, classes, merge == "score", gt)
        presence.update(set(pred.present), present, asked)
    return iou, presence, held, unanswered


def evaluate_referring(lasagna, source: Source, indices, progress=True, writer: PredictionWriter | None = None):
    """Every expression of every image; `writer` saves each answer (its query, RLE masks)."""
    iou, notarget = ReferIoU(), NoTargetAccuracy()
    for index in tqdm(indices, desc=f"eval {source.name}", disable=not progress):
        record: ReferRecord = source[index]
        image = record.load_image()
        # why one call: the image is encoded once for all its expressions
        predictions = lasagna.segment_queries(image, [expr.text for expr in record.expressions])
        if writer is not None:
            writer.queries(record.image_id, image, [expr.text for expr in record.expressions], predictions)
        for expr, pred in zip(record.expressions, predictions, strict=True):
            gt = expr.load_masks()
            iou.update(_union(pred.masks, image.shape[:2]), gt.any(0) if len(gt) else np.zeros(image.shape[:2], bool))
            notarget.update(len(pred.masks) > 0, len(gt) > 0)
    return iou, notarget


def evaluate_reasoning(
    lasagna, source: Source, indices, progress=True, writer: PredictionWriter | None = None
) -> ReferIoU:
    """Each record's first query, as the released code evaluates ReasonSeg: a sentence in the first reasoning template
    ("{query} Please output segmentation mask."), a phrase in the first referring one; the union of the answer's masks
    against the target, its ignore pixels left out. `writer` saves each answer with the question asked."""
    iou = ReferIoU()
    for index in tqdm(indices, desc=f"eval {source.name}", disable=not progress):
        record: ReasonRecord = source[index]
        image = record.load_image()
        truth = np.asarray(record.load_mask())
        if truth.shape != image.shape[:2]:
            raise ValueError(f"{record.image_id}: reasoning mask {truth.shape} does not match the image {image.shape}")
        question = reasoning_question(record.queries[0], record.is_sentence)
        pred = lasagna.segment(image, query=question)
        if writer is not None:
            writer.query(record.image_id, image, question, pred)
        iou.update(_union(pred.masks, image.shape[:2]), truth == 1, truth == IGNORE_LABEL)
    return iou


def _class_list(source: Source) -> list[str] | None:
    """The semantic source's class list (every record has the same), None for an empty source."""
    return list(source[0].classes) if len(source) else None


def _union(masks: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: every mask of an answer together (all False for none)."""
    out = np.zeros(shape, bool)
    for mask in masks:
        out |= mask
    return out


def _sum_scalar(value: int, reduce: Callable | None) -> int:
    if reduce is None:
        return int(value)
    return int(reduce(torch.tensor([float(value)]), reduction="sum").item())


def evaluate_model(
    lasagna,
    dataset: str,
    split: str,
    root: str | None = None,
    limit: int | None = None,
    chunk_size: int = 16,
    decoder=None,
    rank: int = 0,
    world: int = 1,
    reduce: Callable | None = None,
    progress: bool = True,
    single_class: bool = False,
    tasks: tuple[str, ...] | None = None,
    present_only: bool = False,
    merge: str = "score",
    options: dict | None = None,
    save_preds: str | Path | None = None,
    save_overlays: bool = False,
    run_info: dict | None = None,
) -> dict:
    """Evaluate on the first `limit` items of each task source of the split (`tasks`, default all the dataset has);
    `options` go to the dataset's reader (`layout`, ...). Returns a JSON-ready report.

    `save_preds`: a folder to write every answer to (`eval.preds`: `<task>/<image id>/result.json`, label.png,
    `<task>/run.json` with `run_info` and the task's settings under "settings", `semantic-gt/`), overlays too with
    `save_overlays`."""
    report: dict = {"dataset": dataset, "split": split, "merge": merge}
    if present_only:
        report["present_only"] = True
    held_out = ()
    if dataset == "shapeworld":
        from ..shapeworld import HELD_OUT

        held_out = HELD_OUT
    sources = open_eval_sources(dataset, split, root, **(options or {}))
    unknown = sorted(set(tasks or ()) - set(sources))
    if unknown:
        raise ValueError(f"{dataset} {split} has no {', '.join(unknown)} task; it has {', '.join(sources)}")
    for task, source in sources.items():
        if tasks is not None and task not in tasks:
            continue
        count = len(source) if limit is None else min(limit, len(source))
        indices = list(range(rank, count, world))
        writer = None
        if save_preds is not None:
            info = {"dataset": dataset, "split": split, "images": count}
            writer = PredictionWriter(Path(save_preds), task, info, run_info or {}, save_overlays, main=rank == 0)
            if rank == 0:
                writer.prepare()
            _sum_scalar(0, reduce)  # a barrier: no process writes an image before the folder is ready
        if task == "semantic":
            iou, presence, held, unanswered = evaluate_semantic(
                lasagna,
                source,
                indices,
                chunk_size,
                decoder,
                held_out,
                progress,
                single_class,
                present_only,
                merge,
                writer,
            )
            _reduce_metric(iou, reduce)
            _reduce_metric(presence, reduce)
            sem = iou.compute()
            report["semantic"] = {
                "images": count,
                "mIoU": sem["mIoU"],
                "pixel_acc": sem["pixel_acc"],
                **{k: v for k, v in presence.compute().items() if k in ("present_recall", "absent_rejection")},
                # classes the answer never named plus names that matched no queried class (free decoding)
                "name_disagreements": _sum_scalar(unanswered, reduce),
                "per_class_iou": sem["per_class_iou"],
                # one row per class: name, IoU, GT and predicted pixels (see eval.report)
                "per_class": per_class_rows(iou, _class_list(source)),
            }
            if held:
                values = [sem["per_class_iou"][i] for i in held if sem["per_class_iou"][i] is not None]
                report["semantic"]["held_out_mIoU"] = float(np.mean(values)) if values else None
        elif task == "referring":
            iou, notarget = evaluate_referring(lasagna, source, indices, progress, writer)
            _reduce_metric(iou, reduce)
            _reduce_metric(notarget, reduce)
            report["referring"] = {"images": count, **iou.compute(), **notarget.compute()}
        elif task == "reasoning":
            iou = evaluate_reasoning(lasagna, source, indices, progress, writer)
            _reduce_metric(iou, reduce)
            report["reasoning"] = {"images": count, **iou.compute()}
    return report
