"""`PredictionWriter`: the layout eval --save-preds writes, label maps as scored, and which folders it may replace."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lasagna.eval.metrics_cli import read_label_png
from lasagna.eval.preds import PredictionWriter, image_rel
from lasagna.infer.prediction import ClassResult, Prediction


def test_image_rel_drops_roots_and_image_suffixes():
    assert image_rel("shapeworld/val/0000003") == "shapeworld/val/0000003"
    assert image_rel("ADE_val_00000001.jpg") == "ADE_val_00000001"
    assert image_rel("/data/photos/a.PNG") == "data/photos/a"  # a user's absolute path stays inside DIR
    assert image_rel("scan.v2") == "scan.v2"  # not an image suffix: kept
    for bad in ("", "../x", "a/../../b", "run.json"):
        with pytest.raises(ValueError, match="cannot name an output folder"):
            image_rel(bad)


def _overlapping_answer() -> Prediction:
    """Two classes whose masks overlap on the middle column: the score merge and the logit merge disagree there."""
    left = torch.tensor([[5.0, 5.0, -5.0]] * 2)
    right = torch.tensor([[-5.0, 1.0, 5.0]] * 2)
    classes = [ClassResult("b", True, 0.2, (left > 0).numpy()), ClassResult("d", True, 0.99, (right > 0).numpy())]
    return Prediction(image_size=(2, 3), classes=classes, logits=torch.stack([left, right]))


@pytest.mark.parametrize("by_score", [True, False])
def test_semantic_label_is_the_map_eval_scored_indexed_by_the_full_list(tmp_path, by_score):
    pred, names = _overlapping_answer(), ["a", "b", "c", "d"]
    writer = PredictionWriter(tmp_path, "semantic", {"dataset": "toy"})
    writer.prepare()
    gt = np.array([[1, 1, 3], [-1, 3, 3]])
    writer.semantic("imgs/x.jpg", np.zeros((2, 3, 3), np.uint8), pred, names, by_score, gt)
    writer.write_run(classes=names)
    label = read_label_png(tmp_path / "semantic" / "imgs" / "x" / "label.png")
    expected = pred.semantic_map(names, by_score=by_score)
    assert np.array_equal(label, expected) and label[0, 1] == (3 if by_score else 1)
    assert np.array_equal(read_label_png(tmp_path / "semantic-gt" / "imgs" / "x.png"), np.where(gt < 0, 255, gt))
    result = json.loads((tmp_path / "semantic" / "imgs" / "x" / "result.json").read_text())
    assert result["image"] == "imgs/x.jpg" and [c["name"] for c in result["classes"]] == ["b", "d"]
    run = json.loads((tmp_path / "semantic" / "run.json").read_text())
    assert run["settings"]["classes"] == names and run["task"] == "semantic" and run["dataset"] == "toy"
    assert not (tmp_path / "semantic" / "imgs" / "x" / "overlay.png").exists()  # only with overlays=True
    with pytest.raises(ValueError, match="would share the folder imgs/x"):
        writer.semantic("imgs/x.png", np.zeros((2, 3, 3), np.uint8), pred, names, by_score, gt)


def test_gt_of_more_than_255_classes_is_16_bit(tmp_path):
    names = [f"c{i}" for i in range(300)]
    pred = Prediction(image_size=(1, 3), classes=[ClassResult(n, False, 0.0, None) for n in names])
    writer = PredictionWriter(tmp_path, "semantic", {})
    writer.semantic("a", np.zeros((1, 3, 3), np.uint8), pred, names, True, np.array([[299, -1, 255]]))
    with Image.open(tmp_path / "semantic-gt" / "a.png") as im:
        assert im.mode.startswith("I")
    assert read_label_png(tmp_path / "semantic-gt" / "a.png").tolist() == [[299, 65535, 255]]
    assert read_label_png(tmp_path / "semantic" / "a" / "label.png").tolist() == [[65535] * 3]


def test_queries_are_saved_with_the_question_and_overlays_on_request(tmp_path):
    image = np.zeros((4, 4, 3), np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    writer = PredictionWriter(tmp_path, "referring", {}, overlays=True)
    writer.queries("s/1", image, ["the red one", "the sky"], [Prediction((4, 4), masks=[mask]), Prediction((4, 4))])
    first = json.loads((tmp_path / "referring" / "s" / "1" / "0" / "result.json").read_text())
    second = json.loads((tmp_path / "referring" / "s" / "1" / "1" / "result.json").read_text())
    assert first["query"] == "the red one" and len(first["masks"]) == 1 and second["masks"] == []
    assert (tmp_path / "referring" / "s" / "1" / "0" / "overlay.png").is_file()
    assert not (tmp_path / "referring" / "s" / "1" / "0" / "label.png").exists()


def test_prepare_replaces_an_earlier_eval_and_refuses_other_folders(tmp_path):
    first = PredictionWriter(tmp_path, "semantic", {})
    first.prepare()
    (tmp_path / "semantic" / "stale").mkdir()
    (tmp_path / "semantic-gt").mkdir()
    (tmp_path / "semantic-gt" / "stale.png").write_bytes(b"")
    PredictionWriter(tmp_path, "semantic", {"dataset": "again"}).prepare()
    assert sorted(p.name for p in (tmp_path / "semantic").iterdir()) == ["run.json"]
    assert not (tmp_path / "semantic-gt").exists()

    mine = tmp_path / "mine"
    (mine / "semantic").mkdir(parents=True)
    (mine / "semantic" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="lasagna eval did not write"):
        PredictionWriter(mine, "semantic", {}).prepare()
    assert (mine / "semantic" / "notes.txt").read_text() == "keep me"
    (mine / "reasoning").write_text("a file")
    with pytest.raises(NotADirectoryError, match="is a file"):
        PredictionWriter(mine, "reasoning", {}).prepare()
