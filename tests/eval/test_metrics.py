"""Metric values on hand-computed cases, merging of accumulators, and `lasagna metrics semseg` on PNG folders."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from lasagna.data.records import IGNORE_LABEL, LABEL_PNG_IGNORE
from lasagna.eval import metrics_cli
from lasagna.eval.metrics import NoTargetAccuracy, PresenceAccuracy, ReferIoU, SemanticIoU

# K = 4; IGNORE_LABEL is ignore in GT, -1 is "unlabelled" in the prediction; class 3 appears nowhere.
GT = np.array([[0, 0, 1, IGNORE_LABEL], [1, 2, IGNORE_LABEL, 2]])
PRED = np.array([[0, 1, 1, 0], [-1, 2, 0, 2]])


def _png_values(label: np.ndarray) -> np.ndarray:
    """An in-memory label map as an 8-bit label PNG stores it: negative values (ignore, unlabelled) -> 255."""
    return np.where(label < 0, LABEL_PNG_IGNORE, label)


def test_semantic_iou_correct_convention():
    # Scored (gt, pred) pairs: (0,0) (0,1) (1,1) (1,unlabelled) (2,2) (2,2); both ignore pixels are dropped.
    # class 0: TP 1, FN 1, FP 0 -> 1/2.  class 1: TP 1, FN 1 (the unlabelled pixel), FP 1 -> 1/3.
    # class 2: TP 2 -> 1.  class 3: never in GT or prediction -> None.  mIoU = (1/2 + 1/3 + 1) / 3 = 11/18.
    m = SemanticIoU(4)
    m.update(PRED, GT)
    r = m.compute()
    assert r["per_class_iou"] == pytest.approx([1 / 2, 1 / 3, 1.0, None])
    assert r["per_class_iou"][3] is None
    assert r["mIoU"] == pytest.approx(11 / 18)
    assert r["pixel_acc"] == pytest.approx(4 / 6)
    # GT shares 2/6, 2/6, 2/6 -> (1/2 + 1/3 + 1) / 3
    assert r["freq_weighted_iou"] == pytest.approx(11 / 18)
    assert r["num_pixels"] == 6
    json.dumps(r)


def test_semantic_iou_released_convention_counts_void_as_class_0():
    # GT ignore -> 0 and unlabelled prediction -> 0, so pairs are the six above with (1,unl) -> (1,0), plus (0,0) twice.
    # class 0: TP 3, FN 1, FP 1 -> 3/5.  class 1: TP 1, FN 1, FP 1 -> 1/3.  class 2: 1.  mIoU = 29/45.
    m = SemanticIoU(4, convention="released")
    m.update(PRED, GT)
    r = m.compute()
    assert r["per_class_iou"] == pytest.approx([3 / 5, 1 / 3, 1.0, None])
    assert r["mIoU"] == pytest.approx(29 / 45)
    assert r["pixel_acc"] == pytest.approx(6 / 8)


def test_semantic_iou_negative_prediction_is_unlabelled_and_wrong():
    # gt all class 1; pred -1 (unlabelled) on half: class 1 TP 2, FN 2 -> 1/2, and no class gets a false positive.
    m = SemanticIoU(2)
    m.update(np.array([[1, 1, -1, -1]]), np.array([[1, 1, 1, 1]]))
    r = m.compute()
    assert r["per_class_iou"] == [None, pytest.approx(0.5)]
    assert r["pixel_acc"] == pytest.approx(0.5)


def test_semantic_iou_all_ignore_image_contributes_nothing():
    m = SemanticIoU(4)
    m.update(PRED, GT)
    before = m.compute()
    m.update(np.zeros((5, 6), np.int64), np.full((5, 6), IGNORE_LABEL))
    assert m.compute() == before
    empty = SemanticIoU(3)
    empty.update(np.zeros((2, 2), np.int64), np.full((2, 2), IGNORE_LABEL))
    assert empty.compute()["mIoU"] is None and empty.compute()["pixel_acc"] is None


def test_semantic_iou_errors():
    with pytest.raises(ValueError, match="neither a class id"):
        SemanticIoU(3).update(np.zeros((1, 2), np.int64), np.array([[0, 7]]))
    with pytest.raises(ValueError, match="shape"):
        SemanticIoU(3).update(np.zeros((1, 2), np.int64), np.zeros((2, 1), np.int64))
    with pytest.raises(ValueError, match="convention"):
        SemanticIoU(3, convention="paper")
    with pytest.raises(ValueError, match="is a class id"):
        SemanticIoU(3, ignore_index=0)
    with pytest.raises(ValueError, match="neither a class id"):  # 255 is no longer ignore in memory
        SemanticIoU(3).update(np.zeros((1, 2), np.int64), np.array([[0, 255]]))


def test_semantic_iou_class_255_counts_with_many_classes():
    # 459 classes (PASCAL-Context-459): class 255 is scored like any other class, only IGNORE_LABEL is dropped.
    m = SemanticIoU(459)
    m.update(np.array([[255, 255, 0, 458]]), np.array([[255, 255, IGNORE_LABEL, 458]]))
    r = m.compute()
    assert r["num_pixels"] == 3 and r["pixel_acc"] == 1.0
    assert r["per_class_iou"][255] == 1.0 and r["per_class_iou"][458] == 1.0 and r["per_class_iou"][0] is None


def test_refer_iou_by_hand():
    m = ReferIoU()
    # I = 1, U = 3 -> 1/3
    m.update(np.array([[1, 1, 0], [0, 0, 0]], bool), np.array([[0, 1, 1], [0, 0, 0]], bool))
    # empty GT and empty prediction: U = 0 -> IoU 1.0 for gIoU, nothing for cIoU
    m.update(np.zeros((2, 3), bool), np.zeros((2, 3), bool))
    # the only disagreeing pixel (0, 1) is ignored: I = 2, U = 2 -> 1
    pred, gt = np.array([[1, 1], [1, 0]], bool), np.array([[1, 0], [1, 0]], bool)
    m.update(pred, gt, ignore=np.array([[0, 1], [0, 0]], bool))
    r = m.compute()
    assert r["cIoU"] == pytest.approx(3 / 5)
    assert r["gIoU"] == pytest.approx((1 / 3 + 1 + 1) / 3)
    assert r["num_samples"] == 3


def test_refer_iou_undefined_and_errors():
    assert ReferIoU().compute() == {"cIoU": None, "gIoU": None, "num_samples": 0}
    with pytest.raises(TypeError, match="bool"):
        ReferIoU().update(np.zeros((2, 2), np.float32), np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="shape"):
        ReferIoU().update(np.zeros((2, 2), bool), np.zeros((2, 3), bool))


def test_no_target_accuracy():
    m = NoTargetAccuracy()
    for pred, gt in [(False, False), (True, False), (True, True), (False, True), (True, True)]:
        m.update(pred, gt)
    r = m.compute()
    assert r["n_acc"] == pytest.approx(1 / 2)
    assert r["t_acc"] == pytest.approx(2 / 3)
    assert r["accuracy"] == pytest.approx(3 / 5)
    assert (r["num_no_target"], r["num_target"]) == (2, 3)
    only_targets = NoTargetAccuracy()
    only_targets.update(True, True)
    assert only_targets.compute()["n_acc"] is None


def test_presence_accuracy():
    m = PresenceAccuracy()
    # cat TP, dog FN, car FP, tree TN; "bus" was predicted without being asked; "person" is present but not asked.
    m.update({"cat", "car", "bus"}, {"cat", "dog", "person"}, ["cat", "dog", "car", "tree"])
    m.update(set(), set(), ["sky"])  # TN
    r = m.compute()
    assert (r["tp"], r["fn"], r["tn"], r["fp"], r["unqueried_predictions"]) == (1, 1, 2, 1, 1)
    assert r["present_recall"] == pytest.approx(1 / 2)
    assert r["absent_rejection"] == pytest.approx(2 / 3)
    assert r["precision"] == pytest.approx(1 / 2)
    assert r["accuracy"] == pytest.approx(3 / 5)
    only_present = PresenceAccuracy()
    only_present.update({"cat"}, {"cat"}, ["cat"])
    assert only_present.compute()["absent_rejection"] is None
    with pytest.raises(TypeError, match="list of class names"):
        PresenceAccuracy().update({"cat"}, {"cat"}, "cat")


def _feed(metric, rng: np.random.Generator, n: int) -> list:
    """Random samples for `metric`, fed to it; returned so they can be replayed."""
    samples = []
    for _ in range(n):
        if isinstance(metric, SemanticIoU):
            s = (
                rng.integers(-1, 5, (6, 7)),
                np.where(rng.random((6, 7)) < 0.2, IGNORE_LABEL, rng.integers(0, 5, (6, 7))),
            )
        elif isinstance(metric, ReferIoU):
            s = (rng.random((5, 5)) < 0.5, rng.random((5, 5)) < 0.3, rng.random((5, 5)) < 0.1)
        elif isinstance(metric, NoTargetAccuracy):
            s = (bool(rng.random() < 0.5), bool(rng.random() < 0.5))
        else:
            names = [f"c{i}" for i in range(6)]
            s = ({n for n in names if rng.random() < 0.5}, {n for n in names if rng.random() < 0.5}, names[:4])
        metric.update(*s)
        samples.append(s)
    return samples


@pytest.mark.parametrize("make", [lambda: SemanticIoU(5), ReferIoU, NoTargetAccuracy, PresenceAccuracy])
def test_merge_equals_one_accumulator(make):
    rng = np.random.default_rng(0)
    a, b, whole = make(), make(), make()
    for s in _feed(a, rng, 4) + _feed(b, rng, 3):
        whole.update(*s)
    summed = make()
    summed.add_state(a.state() + b.state())  # what an all-reduce of the states gives
    merged = a.merge(b)
    np.testing.assert_allclose(merged.state(), whole.state())
    np.testing.assert_allclose(summed.state(), whole.state())
    for key, value in whole.compute().items():
        assert merged.compute()[key] == pytest.approx(value)
        assert summed.compute()[key] == pytest.approx(value)
    a.reset()
    assert a.compute() == make().compute()


def test_merge_rejects_other_metrics():
    with pytest.raises(TypeError, match="cannot merge"):
        ReferIoU().merge(NoTargetAccuracy())
    with pytest.raises(ValueError, match="number of classes"):
        SemanticIoU(3).add_state(SemanticIoU(4).state())


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    metrics_cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def _write(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_cli_semseg(tmp_path, capsys):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    _write(pred_dir / "a.png", _png_values(PRED).astype(np.uint8))
    _write(gt_dir / "a.png", _png_values(GT).astype(np.uint16))  # 16-bit GT, void stored as 255
    rng = np.random.default_rng(1)
    pred_b, gt_b = rng.integers(0, 4, (3, 5)), rng.integers(0, 4, (3, 5))
    _write(pred_dir / "city" / "b.png", pred_b.astype(np.uint8))
    _write(gt_dir / "city" / "b.png", gt_b.astype(np.uint8))
    assert _run_cli(["metrics", "semseg", "--pred", str(pred_dir), "--gt", str(gt_dir), "--num-classes", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = SemanticIoU(4)
    expected.update(PRED, GT)
    expected.update(pred_b, gt_b)
    assert out["num_images"] == 2
    assert out["mIoU"] == pytest.approx(expected.compute()["mIoU"])
    assert out["per_class_iou"] == pytest.approx(expected.compute()["per_class_iou"])
    argv = ["metrics", "semseg", "--pred", str(pred_dir), "--gt", str(gt_dir), "--num-classes", "4"]
    _run_cli([*argv, "--convention", "released"])
    assert json.loads(capsys.readouterr().out)["convention"] == "released"


def test_cli_semseg_errors_name_the_files(tmp_path):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    _write(gt_dir / "a.png", _png_values(GT).astype(np.uint8))
    _write(gt_dir / "b.png", _png_values(GT).astype(np.uint8))
    _write(pred_dir / "a.png", np.zeros((3, 4), np.uint8))
    argv = ["metrics", "semseg", "--pred", str(pred_dir), "--gt", str(gt_dir), "--num-classes", "4"]
    with pytest.raises(FileNotFoundError, match=r"no counterpart .*b\.png"):
        _run_cli(argv)
    _write(pred_dir / "b.png", _png_values(PRED).astype(np.uint8))
    with pytest.raises(ValueError, match=r"size mismatch: .*a\.png is \(3, 4\)"):
        _run_cli(argv)
    _write(pred_dir / "a.png", np.zeros((2, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="single-channel"):
        _run_cli(argv)
    _write(pred_dir / "a.png", _png_values(PRED).astype(np.uint8))
    _write(gt_dir / "b.png", np.full((2, 4), 9, np.uint8))
    with pytest.raises(ValueError, match=r"b\.png: gt holds value 9"):
        _run_cli(argv)


def test_cli_semseg_more_than_255_classes(tmp_path, capsys):
    # 16-bit GT with 300 classes: 255 is a class, 65535 the files' void value (the default past 255 classes).
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    _write(gt_dir / "a.png", np.array([[255, 255, 299, 65535]], np.uint16))
    _write(pred_dir / "a.png", np.array([[255, 0, 299, 7]], np.uint16))
    argv = ["metrics", "semseg", "--pred", str(pred_dir), "--gt", str(gt_dir), "--num-classes", "300"]
    with pytest.raises(ValueError, match="ignore value 255 is a class id"):
        _run_cli([*argv, "--ignore", "255"])  # the 8-bit void would silently drop class 255
    assert _run_cli(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["num_pixels"] == 3 and out["pixel_acc"] == pytest.approx(2 / 3)
    assert out["per_class_iou"][255] == pytest.approx(1 / 2) and out["per_class_iou"][299] == 1.0


def test_present_only_evaluation_asks_each_image_for_its_own_classes():
    import torch

    from lasagna.eval.evaluate import evaluate_semantic
    from lasagna.infer.prediction import ClassResult, Prediction
    from lasagna.shapeworld import ShapeWorldSemantic

    source = ShapeWorldSemantic("test", size=64, length=3)
    labels = {source[i].load_image().tobytes(): source[i].load_label() for i in range(3)}
    names = list(source[0].classes)
    asked_lists = []

    class Oracle:  # answers every asked class present, with its true mask
        def segment(self, image, classes, chunk_size, decoder):
            gt = labels[image.tobytes()]
            asked_lists.append((list(classes), {names[k] for k in np.unique(gt)}))
            masks = [gt == names.index(c) for c in classes]
            logits = torch.stack([torch.from_numpy(m).float() * 2 - 1 for m in masks])
            return Prediction(
                gt.shape, [ClassResult(c, True, 1.0, m) for c, m in zip(classes, masks, strict=True)], logits=logits
            )

    iou, presence, _, _ = evaluate_semantic(Oracle(), source, range(3), 16, present_only=True)
    assert len(asked_lists) == 3
    for asked, present in asked_lists:
        assert set(asked) == present and len(asked) < len(names)
    assert iou.compute()["mIoU"] == 1.0
    assert presence.compute()["present_recall"] == 1.0 and presence.compute()["absent_rejection"] is None
    asked_lists.clear()
    iou, presence, _, _ = evaluate_semantic(Oracle(), source, range(3), 16)
    assert all(asked == names for asked, _ in asked_lists)
    assert presence.compute()["absent_rejection"] == 0.0  # the oracle says "present" to every absent class too


def test_reasoning_evaluation_asks_each_first_query_as_trained_and_leaves_ignore_pixels_out():
    from lasagna.data.records import IGNORE_LABEL, ReasonRecord
    from lasagna.eval.evaluate import evaluate_model, evaluate_reasoning
    from lasagna.infer.prediction import Prediction
    from lasagna.prompts import reasoning_question

    image = np.zeros((4, 6, 3), np.uint8)
    truth = np.zeros((4, 6), np.int64)
    truth[1:3, 1:3] = 1
    truth[0, 5] = IGNORE_LABEL
    records = [
        ReasonRecord("a", lambda: image, ("What holds water?", "ignored"), True, lambda: truth),
        ReasonRecord("b", lambda: image, ("The Red Cup.",), False, lambda: truth),
    ]
    asked = []

    class Oracle:  # the true mask, plus the ignored pixel
        def segment(self, image, query):
            asked.append(query)
            mask = truth == 1
            mask[0, 5] = True
            return Prediction(image.shape[:2], masks=[mask])

    class Source(list):
        name = "toy"

    iou = evaluate_reasoning(Oracle(), Source(records), range(2), progress=False)
    assert asked == [
        "What holds water? Please output segmentation mask.",
        "What is the red cup in this image? Please output segmentation mask.",
    ]
    assert iou.compute() == {"cIoU": 1.0, "gIoU": 1.0, "num_samples": 2}
    assert reasoning_question(" two  words ", False).startswith("What is two words in this image?")
    with pytest.raises(ValueError, match="val has no chat, vqa task; it has semantic, referring, reasoning"):
        evaluate_model(Oracle(), "shapeworld", "val", tasks=("vqa", "reasoning", "chat"))
