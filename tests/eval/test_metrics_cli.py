"""`lasagna metrics semseg` on output folders of `lasagna segment --out` / `eval --save-preds` (<rel>/label.png,
run.json with the class list), its errors, and --chart. The flat-folder form is tested in test_metrics.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lasagna.cli import main
from lasagna.eval.metrics import SemanticIoU
from lasagna.infer.outputs import label_png

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


NAMES = ["wall", "floor", "sky"]
PRED_A = np.array([[0, 0, 1], [2, 255, 1]])
GT_A = np.array([[0, 0, 1], [2, 2, 255]])
PRED_B = np.array([[2, 2], [2, 0]])
GT_B = np.array([[2, 2], [1, 0]])


def _image_folder(folder, label: np.ndarray, k: int = len(NAMES)) -> None:
    folder.mkdir(parents=True)
    (folder / "result.json").write_text("{}")
    (folder / "overlay.png").write_bytes(b"not read")  # only label.png is scored
    label_png(np.where(label == 255, -1, label), k).save(folder / "label.png")


def _output_folder(tmp_path, run: dict | None = None):
    """A segment-style output: DIR/run.json, DIR/a/label.png, DIR/city/b/label.png, run-level COCO files; GT/a.png,
    GT/city/b.png."""
    out, gt = tmp_path / "out", tmp_path / "gt"
    _image_folder(out / "a", PRED_A)
    _image_folder(out / "city" / "b", PRED_B)
    run = run if run is not None else {"settings": {"classes": NAMES, "model": "m"}}
    (out / "run.json").write_text(json.dumps(run))
    (out / "predictions.json").write_text("[]")
    (gt / "city").mkdir(parents=True)
    Image.fromarray(GT_A.astype(np.uint8)).save(gt / "a.png")
    Image.fromarray(GT_B.astype(np.uint8)).save(gt / "city" / "b.png")
    return out, gt


def _expected() -> dict:
    metric = SemanticIoU(len(NAMES))
    metric.update(np.where(PRED_A == 255, -1, PRED_A), np.where(GT_A == 255, -1, GT_A))
    metric.update(PRED_B, GT_B)
    return metric.compute()


def test_output_folder_pairs_label_pngs_with_gt_and_names_the_classes(tmp_path, capsys):
    out, gt = _output_folder(tmp_path)
    chart = tmp_path / "charts" / "iou.png"
    assert main(["metrics", "semseg", "--pred", str(out), "--gt", str(gt), "--chart", str(chart)]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    expected = _expected()
    assert result["num_images"] == 2 and result["classes"] == NAMES
    assert result["mIoU"] == pytest.approx(expected["mIoU"])
    assert result["per_class_iou"] == pytest.approx(expected["per_class_iou"])
    assert [r["name"] for r in result["per_class"]] == NAMES
    assert [r["iou"] for r in result["per_class"]] == pytest.approx(expected["per_class_iou"])
    assert "floor" in captured.err and f"wrote {chart}" in captured.err  # the table and the chart
    with Image.open(chart) as im:
        assert im.format == "PNG"
    # without run.json it is still an output folder (per-image result.json); the count then comes from the flag
    (out / "run.json").unlink()
    assert main(["metrics", "semseg", "--pred", str(out), "--gt", str(gt), "--num-classes", "3"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["mIoU"] == pytest.approx(expected["mIoU"]) and again["classes"] is None


def test_class_count_mismatches_are_clear_errors(tmp_path, capsys):
    out, gt = _output_folder(tmp_path)
    argv = ["metrics", "semseg", "--pred", str(out), "--gt", str(gt)]
    assert main([*argv, "--num-classes", "4"]) == 2
    assert "--num-classes 4 does not match the 3 classes in" in capsys.readouterr().err
    (out / "run.json").write_text(json.dumps({"settings": {"classes": NAMES[:2]}}))  # the maps hold class index 2
    assert main(argv) == 2
    assert "holds class index 2, but the run has 2 classes" in capsys.readouterr().err
    (out / "run.json").write_text(json.dumps({"classes": "wall, floor"}))  # a hand-made one: the list alone
    assert main(argv) == 2
    assert "'classes' must be a non-empty list" in capsys.readouterr().err
    (out / "run.json").write_text(json.dumps({"settings": ["wall", "floor"]}))
    assert main(argv) == 2
    assert "'settings' must be a JSON object" in capsys.readouterr().err
    (out / "run.json").unlink()
    assert main(argv) == 2
    assert "--num-classes is needed" in capsys.readouterr().err


def test_folders_without_label_maps_are_refused(tmp_path, capsys):
    query_run = tmp_path / "query"
    (query_run / "a").mkdir(parents=True)
    (query_run / "a" / "result.json").write_text("{}")
    gt = tmp_path / "gt"
    gt.mkdir()
    Image.fromarray(GT_B.astype(np.uint8)).save(gt / "a.png")
    argv = ["metrics", "semseg", "--pred", str(query_run), "--gt", str(gt), "--num-classes", "3"]
    assert main(argv) == 2
    assert "holds no <image>/label.png" in capsys.readouterr().err
    (query_run / "run.json").write_text(json.dumps({"settings": {"query": "the red cup"}}))
    assert main(argv[:-2]) == 2
    assert "--query run" in capsys.readouterr().err
    single = tmp_path / "single"
    _image_folder(single, PRED_B)
    assert main(["metrics", "semseg", "--pred", str(single), "--gt", str(gt), "--num-classes", "3"]) == 2
    assert "one image's output folder" in capsys.readouterr().err


def test_missing_predictions_name_the_image(tmp_path, capsys):
    out, gt = _output_folder(tmp_path)
    Image.fromarray(GT_B.astype(np.uint8)).save(gt / "c.png")
    assert main(["metrics", "semseg", "--pred", str(out), "--gt", str(gt)]) == 2
    assert "have no counterpart" in (err := capsys.readouterr().err) and "c.png" in err


def test_metrics_scores_what_segment_wrote(tmp_path, capsys):
    """`lasagna segment DIR --out OUT` then `metrics semseg --pred OUT`: nested folders, classes from run.json."""
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for name, where in [("shapes.png", "sub"), ("shapeworld-test-0.png", "")]:
        (images / where / name).write_bytes((EXAMPLES / name).read_bytes())
    out, gt = tmp_path / "out", tmp_path / "gt"
    classes = "sky, grass, red circle"
    assert main(["segment", str(images), "--recursive", "--classes", classes, "--out", str(out)]) == 0
    capsys.readouterr()
    labels = {p.parent.relative_to(out).as_posix(): np.asarray(Image.open(p)) for p in out.rglob("label.png")}
    assert sorted(labels) == ["shapeworld-test-0", "sub/shapes"]
    # GT: the saved maps with one image's sky pixels called grass, so the score is known and below 1
    for rel, label in labels.items():
        truth = label.copy()
        if rel == "sub/shapes":
            truth[label == 0] = 1
        (gt / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(truth.astype(np.uint8)).save(gt / f"{rel}.png")
    expected = SemanticIoU(3)
    for rel, label in labels.items():
        truth = np.asarray(Image.open(gt / f"{rel}.png")).astype(np.int64)
        expected.update(label.astype(np.int64), np.where(truth == 255, -1, truth))
    assert main(["metrics", "semseg", "--pred", str(out), "--gt", str(gt)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["classes"] == ["sky", "grass", "red circle"] and result["num_images"] == 2
    assert result["mIoU"] == pytest.approx(expected.compute()["mIoU"]) and result["mIoU"] < 1


def test_a_gt_value_that_is_no_class_names_the_files_ignore_value(tmp_path, capsys):
    out, gt = _output_folder(tmp_path)
    Image.fromarray(np.array([[0, 0, 1], [2, 7, 255]], np.uint8)).save(gt / "a.png")
    assert main(["metrics", "semseg", "--pred", str(out), "--gt", str(gt)]) == 2
    err = capsys.readouterr().err
    assert "a.png" in err and "value 7" in err and "255 (--ignore)" in err and "index -1" not in err
