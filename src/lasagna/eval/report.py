"""Per-class IoU as a table (JSON rows and printed text) and as a bar chart PNG, for `lasagna eval` and
`lasagna metrics semseg`.

The rows come from a `SemanticIoU` confusion matrix, so they carry pixel counts beside the IoU: a class with few GT
pixels has a noisy IoU, and a class with GT pixels but no prediction (IoU 0) is a recognition failure rather than a
mask-quality one. A class absent from both GT and prediction has IoU None (undefined): it is listed, not charted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..atomic import write_atomic_file
from .metrics import SemanticIoU

CHART_MAX_LABEL = 28
"""Class names longer than this are cut in chart labels (ADE20K has names like "chest of drawers, chest, bureau")."""


def class_names(num_classes: int, names: Sequence[str] | None = None) -> list[str]:
    """`names` checked against the class count, or "class 0".."class K-1" when there are none."""
    if names is None:
        return [f"class {i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names given for {num_classes} classes")
    return list(names)


def per_class_rows(metric: SemanticIoU, names: Sequence[str] | None = None) -> list[dict]:
    """One row per class, in class-id order: {"id", "name", "iou" (None if undefined), "gt_pixels", "pred_pixels"}
    (pixels counted as the metric counts them, ignore pixels left out)."""
    state = metric.state()
    k = metric.num_classes
    names = class_names(k, names)
    iou = metric.compute()["per_class_iou"]
    gt_pixels, pred_pixels = state.sum(axis=1), state[:, :k].sum(axis=0)
    return [
        {"id": i, "name": names[i], "iou": iou[i], "gt_pixels": int(gt_pixels[i]), "pred_pixels": int(pred_pixels[i])}
        for i in range(k)
    ]


def _sorted(rows: Sequence[dict]) -> list[dict]:
    """Best IoU first, undefined ones last, ties by class id (stable)."""
    return sorted(rows, key=lambda r: (r["iou"] is None, -(r["iou"] or 0.0), r["id"]))


def format_table(rows: Sequence[dict]) -> str:
    """A plain-text table of `rows`, best IoU first, undefined IoUs last as "-"."""
    width = max([len("class"), *(len(r["name"]) for r in rows)])
    lines = [f"{'class':<{width}}  {'IoU':>6}  {'GT px':>10}  {'pred px':>10}"]
    for r in _sorted(rows):
        iou = "-" if r["iou"] is None else f"{100 * r['iou']:.1f}"
        lines.append(f"{r['name']:<{width}}  {iou:>6}  {r['gt_pixels']:>10}  {r['pred_pixels']:>10}")
    return "\n".join(lines)


def _label(name: str) -> str:
    return name if len(name) <= CHART_MAX_LABEL else name[: CHART_MAX_LABEL - 1] + "…"


def save_iou_chart(path: Path, rows: Sequence[dict], title: str = "per-class IoU") -> Path:
    """A horizontal bar chart of the classes' IoU (%), best first, with the mIoU as a dashed line, written
    atomically to `path` (PNG). The figure grows with the class count so 150 names stay readable."""
    # The object API with the Agg canvas: no pyplot state and no display backend, so it works in servers and
    # in threads and never opens a window.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scored = [r for r in _sorted(rows) if r["iou"] is not None]
    skipped = len(rows) - len(scored)
    if not scored:
        raise ValueError("no class has a defined IoU (no class in the GT or the predictions): nothing to chart")
    values = np.array([100 * r["iou"] for r in scored])
    height = 1.2 + 0.17 * len(scored)
    fig = Figure(figsize=(7.5, max(2.5, height)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    positions = np.arange(len(scored))
    small = 8 if len(scored) <= 60 else 7
    ax.barh(positions, values, height=0.75, color="#4c78a8")
    ax.set_yticks(positions, [_label(r["name"]) for r in scored], fontsize=small)
    for y, v in zip(positions, values, strict=True):  # the number too: bars of 150 classes are hard to read off
        ax.text(v + 1.0, y, f"{v:.1f}", va="center", fontsize=small - 1)
    ax.invert_yaxis()  # best class on top
    ax.set_ylim(len(scored) - 0.5, -0.5)
    ax.set_xlim(0, 110)  # room for the number after a full bar
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel("IoU (%)")
    mean = float(values.mean())
    ax.axvline(mean, color="#e45756", linestyle="--", linewidth=1, label=f"mIoU {mean:.1f}")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    note = f"\n{skipped} classes in neither GT nor prediction (no IoU) not shown" if skipped else ""
    ax.set_title(title + note, fontsize=9)
    fig.tight_layout()
    return write_atomic_file(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
