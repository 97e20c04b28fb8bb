"""Segmentation metrics as accumulators: `update(...)` per sample, `compute() -> dict`, `reset()`.

Every accumulator keeps its whole state in one small numpy vector or matrix of counts. `state()` returns a copy and
`add_state(state)` adds one in, so results gathered from several processes are exact:

    t = torch.from_numpy(metric.state()); torch.distributed.all_reduce(t)
    metric.reset(); metric.add_state(t.numpy())

`merge(other)` does the same between two accumulators in one process. `compute()` returns plain Python floats and
ints (JSON-ready), with None for every quantity that is undefined on the data seen (e.g. no absent class queried).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, Self

import numpy as np

from ..data.records import IGNORE_LABEL

Convention = Literal["correct", "released"]
CONVENTIONS: tuple[str, ...] = ("correct", "released")


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den > 0 else None


def _check_mask(x: np.ndarray, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.bool_:
        raise TypeError(f"{name} must be a bool mask (e.g. `logits > 0`), got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be (H, W), got shape {x.shape}")
    if shape is not None and x.shape != shape:
        raise ValueError(f"{name} has shape {x.shape}, expected {shape} like the other masks")
    return x


class _Accumulator:
    """State handling shared by all metrics: a count array that adds across shards."""

    _state: np.ndarray

    def _empty(self) -> np.ndarray:
        raise NotImplementedError

    def reset(self) -> None:
        self._state = self._empty()

    def state(self) -> np.ndarray:
        """A copy of the counts; states of shards of one split sum to the state of the whole split."""
        return self._state.copy()

    def add_state(self, state: np.ndarray) -> None:
        state = np.asarray(state)
        if state.shape != self._state.shape:
            raise ValueError(
                f"{type(self).__name__}: state of shape {state.shape} cannot be added to one of shape "
                f"{self._state.shape} (different metric or number of classes?)"
            )
        self._state = self._state + state.astype(self._state.dtype)

    def merge(self, other: Self) -> Self:
        """Add `other`'s counts into this accumulator (in place) and return self."""
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        self.add_state(other._state)
        return self


class SemanticIoU(_Accumulator):
    """Per-class IoU, mIoU and pixel accuracy of semantic label maps, from one confusion matrix.

    update(pred, gt): pred and gt are (H, W) integer label maps of the same shape, ids 0..K-1.

    Conventions, chosen by `convention`:
    - "correct" (default): GT pixels equal to `ignore_index` (default IGNORE_LABEL, -1, the in-memory void value;
      pass the file's value, e.g. 255, when scoring raw label files) are excluded from every count. Any other GT
      value outside 0..K-1 is an error. A predicted value outside 0..K-1 (e.g. -1, "unlabelled": no mask covered
      the pixel) is wrong: it is a false negative of the GT class and a false positive of no class.
    - "released": reproduces the released LaSagnA / LISA evaluation (spec §6.1, §9.8): every GT value outside
      0..K-1, ignore included, becomes class 0, and every unlabelled prediction becomes class 0, so void pixels
      count, mostly as correct "class 0" pixels. Use it only to compare with published numbers.

    compute() -> {
      "mIoU": mean of per-class IoU over classes whose IoU is defined, None if none is,
      "pixel_acc": correct pixels / counted pixels (None if no pixel was counted),
      "per_class_iou": K entries, TP / (TP + FP + FN), None for a class absent from both prediction and GT,
      "freq_weighted_iou": sum over defined classes of (GT pixel share) * IoU, None if no pixel was counted,
      "num_pixels": counted pixels }.
    An image whose GT is all ignore contributes nothing under "correct".

    The state is a (K, K + 1) int64 matrix: rows are GT classes, columns predicted classes, and the last column
    counts unlabelled predictions (always 0 under "released").
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_LABEL, convention: Convention = "correct") -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown convention {convention!r}; expected one of {CONVENTIONS}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} is a class id (0..{num_classes - 1})")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.convention = convention
        self.reset()

    def _empty(self) -> np.ndarray:
        return np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        pred, gt = np.asarray(pred), np.asarray(gt)
        for name, x in (("pred", pred), ("gt", gt)):
            if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
                raise ValueError(f"{name} must be an (H, W) integer label map, got {x.dtype} of shape {x.shape}")
        if pred.shape != gt.shape:
            raise ValueError(f"pred has shape {pred.shape} but gt has shape {gt.shape}")
        k = self.num_classes
        pred, gt = pred.astype(np.int64).ravel(), gt.astype(np.int64).ravel()
        pred_ok, gt_ok = (pred >= 0) & (pred < k), (gt >= 0) & (gt < k)
        if self.convention == "released":
            pred, gt = np.where(pred_ok, pred, 0), np.where(gt_ok, gt, 0)
        else:
            bad = ~gt_ok & (gt != self.ignore_index)
            if bad.any():
                raise ValueError(
                    f"gt holds value {int(gt[bad][0])}, which is neither a class id 0..{k - 1} nor the "
                    f"ignore index {self.ignore_index}"
                )
            pred, gt = np.where(pred_ok, pred, k)[gt_ok], gt[gt_ok]
        self._state += np.bincount(gt * (k + 1) + pred, minlength=k * (k + 1)).reshape(k, k + 1)

    def compute(self) -> dict:
        cm = self._state
        k = self.num_classes
        tp = np.diag(cm[:, :k]).astype(np.float64)
        gt_count = cm.sum(axis=1)
        union = gt_count + cm[:, :k].sum(axis=0) - tp
        defined = union > 0
        iou = np.divide(tp, union, out=np.zeros(k), where=defined)
        total = int(gt_count.sum())
        return {
            "mIoU": float(iou[defined].mean()) if defined.any() else None,
            "pixel_acc": _ratio(tp.sum(), total),
            "per_class_iou": [float(v) if d else None for v, d in zip(iou, defined, strict=True)],
            "freq_weighted_iou": float((gt_count * iou).sum() / total) if total else None,
            "num_pixels": total,
        }


class ReferIoU(_Accumulator):
    """cIoU and gIoU of binary masks (referring / reasoning segmentation).

    update(pred, gt, ignore=None): (H, W) bool masks; `ignore` marks pixels excluded from both prediction and GT.
    Per sample, I = |pred & gt| and U = |pred | gt| over the non-ignored pixels.

    compute() -> {
      "cIoU": sum of I / sum of U over the split (None if every U is 0),
      "gIoU": mean over samples of I / U, where a sample with U == 0 (empty GT and empty prediction) counts as
              IoU 1.0, as in the released code (None before any sample),
      "num_samples": number of updates }.

    State: float64 [sum I, sum U, sum of per-sample IoU, number of samples].
    """

    def __init__(self) -> None:
        self.reset()

    def _empty(self) -> np.ndarray:
        return np.zeros(4, dtype=np.float64)

    def update(self, pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> None:
        gt = _check_mask(gt, "gt")
        pred = _check_mask(pred, "pred", gt.shape)
        valid = ~_check_mask(ignore, "ignore", gt.shape) if ignore is not None else True
        inter = int(np.count_nonzero(pred & gt & valid))
        union = int(np.count_nonzero((pred | gt) & valid))
        self._state += (inter, union, inter / union if union else 1.0, 1)

    def compute(self) -> dict:
        inter, union, iou_sum, n = self._state
        return {"cIoU": _ratio(inter, union), "gIoU": _ratio(iou_sum, n), "num_samples": int(n)}


class NoTargetAccuracy(_Accumulator):
    """gRefCOCO-style target / no-target decisions.

    update(pred_has_target, gt_has_target): whether the model answered with a mask (`<ins>`) and whether the
    expression really has a target.

    compute() -> {
      "n_acc": share of no-target samples answered "no target" (N-acc), None if there were none,
      "t_acc": share of target samples answered with a target (T-acc), None if there were none,
      "accuracy": share of all samples decided right, None before any sample,
      "num_no_target", "num_target": sample counts }.

    State: int64 [no-target samples, of which right, target samples, of which right].
    """

    def __init__(self) -> None:
        self.reset()

    def _empty(self) -> np.ndarray:
        return np.zeros(4, dtype=np.int64)

    def update(self, pred_has_target: bool, gt_has_target: bool) -> None:
        right = bool(pred_has_target) == bool(gt_has_target)
        self._state += (0, 0, 1, right) if gt_has_target else (1, right, 0, 0)

    def compute(self) -> dict:
        n_nt, right_nt, n_t, right_t = (int(v) for v in self._state)
        return {
            "n_acc": _ratio(right_nt, n_nt),
            "t_acc": _ratio(right_t, n_t),
            "accuracy": _ratio(right_nt + right_t, n_nt + n_t),
            "num_no_target": n_nt,
            "num_target": n_t,
        }


class PresenceAccuracy(_Accumulator):
    """Present / absent decisions over the classes of complex queries (`name<ins>` vs `name<no_ins>`).

    update(predicted_present, gt_present, queried): the set of class names the model marked present, the set of
    names truly in the image, and the names the query asked about. Only queried names are scored (duplicates
    once): a queried name in gt_present is a positive, any other queried name a negative. Predicted names that were
    not queried are counted apart as "unqueried_predictions" and are in no rate.

    compute() -> {
      "present_recall": TP / (TP + FN) over queried present classes,
      "absent_rejection": TN / (TN + FP) over queried absent classes,
      "precision": TP / (TP + FP),
      "accuracy": (TP + TN) / all queried decisions,
      "tp", "fn", "tn", "fp", "unqueried_predictions", "num_samples": counts }
    with None for a rate whose denominator is 0.

    State: int64 [TP, FN, TN, FP, unqueried predictions, samples].
    """

    def __init__(self) -> None:
        self.reset()

    def _empty(self) -> np.ndarray:
        return np.zeros(6, dtype=np.int64)

    def update(self, predicted_present: Iterable[str], gt_present: Iterable[str], queried: Iterable[str]) -> None:
        if isinstance(queried, str):
            raise TypeError(f"queried must be a list of class names, got the string {queried!r}")
        pred, gt, asked = set(predicted_present), set(gt_present), set(queried)
        tp = len(asked & gt & pred)
        fn = len((asked & gt) - pred)
        fp = len((asked - gt) & pred)
        tn = len(asked - gt - pred)
        self._state += (tp, fn, tn, fp, len(pred - asked), 1)

    def compute(self) -> dict:
        tp, fn, tn, fp, unqueried, n = (int(v) for v in self._state)
        return {
            "present_recall": _ratio(tp, tp + fn),
            "absent_rejection": _ratio(tn, tn + fp),
            "precision": _ratio(tp, tp + fp),
            "accuracy": _ratio(tp + tn, tp + fn + tn + fp),
            "tp": tp,
            "fn": fn,
            "tn": tn,
            "fp": fp,
            "unqueried_predictions": unqueried,
            "num_samples": n,
        }
