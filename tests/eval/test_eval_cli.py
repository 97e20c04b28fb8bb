"""`lasagna eval --save-preds` round trip: `lasagna metrics semseg` on the saved folders gives eval's own numbers;
the per-class table and chart of the report."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from helpers import failed_run, run_two_processes
from lasagna.cli import main
from lasagna.shapeworld import ShapeWorldReferring, ShapeWorldSemantic

EVAL = ["eval", "--dataset", "shapeworld", "--split", "val"]  # the embedded model


def _metrics(capsys, pred, gt) -> dict:
    capsys.readouterr()
    assert main(["metrics", "semseg", "--pred", str(pred), "--gt", str(gt)]) == 0
    return json.loads(capsys.readouterr().out)


def test_saved_predictions_reproduce_eval_miou(tmp_path, capsys):
    report_path, preds = tmp_path / "report.json", tmp_path / "preds"
    assert main([*EVAL, "--limit", "3", "--out", str(report_path), "--save-preds", str(preds)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    semantic = report["semantic"]
    assert semantic["mIoU"] > 0.3  # the embedded model finds most shapes: the round trip is not a trivial 0 == 0

    rows = semantic["per_class"]
    assert [r["iou"] for r in rows] == semantic["per_class_iou"] and rows[0]["name"] == "sky"
    best = max((r for r in rows if r["iou"] is not None), key=lambda r: r["iou"])
    assert best["name"] in printed.splitlines()[1]  # the table, best class first
    chart = tmp_path / "report-per-class-iou.png"
    with Image.open(chart) as im:
        assert im.format == "PNG" and f"wrote {chart}" in printed

    scored = _metrics(capsys, preds / "semantic", preds / "semantic-gt")
    assert scored["num_images"] == 3 and scored["classes"] == [r["name"] for r in rows]
    assert scored["mIoU"] == pytest.approx(semantic["mIoU"], abs=1e-12)
    assert scored["pixel_acc"] == pytest.approx(semantic["pixel_acc"], abs=1e-12)
    assert scored["per_class"] == rows

    reasoning = json.loads((preds / "reasoning" / "shapeworld" / "val" / "0000000" / "result.json").read_text())
    assert reasoning["query"].endswith("Please output segmentation mask.")
    expressions = [e.text for e in ShapeWorldReferring("val")[1].expressions]
    folder = preds / "referring" / "shapeworld" / "val" / "0000001"
    assert sorted(p.name for p in folder.iterdir()) == [str(k) for k in range(len(expressions))]
    assert [json.loads((folder / str(k) / "result.json").read_text())["query"] for k in range(3)] == expressions[:3]
    assert json.loads((preds / "referring" / "run.json").read_text())["images"] == 3


def test_rerun_replaces_the_saved_folder_and_keeps_the_logit_merge(tmp_path, capsys):
    preds = tmp_path / "preds"
    base = [*EVAL, "--tasks", "semantic", "--save-preds", str(preds)]
    assert main([*base, "--limit", "3", "--out", str(tmp_path / "a.json")]) == 0
    args = ["--limit", "2", "--merge", "logit", "--out", str(tmp_path / "b.json"), "--save-overlays"]
    assert main([*base, *args]) == 0
    semantic = json.loads((tmp_path / "b.json").read_text())["semantic"]
    assert sorted(p.name for p in (preds / "semantic" / "shapeworld" / "val").iterdir()) == ["0000000", "0000001"]
    assert (preds / "semantic" / "shapeworld" / "val" / "0000000" / "overlay.png").is_file()
    run = json.loads((preds / "semantic" / "run.json").read_text())
    assert run["settings"]["merge"] == "logit" and run["settings"]["model"] == "embedded:shapeworld-small"
    assert run["settings"]["decoder"] == "template"  # the model's default, as decoded
    assert run["images"] == 2 and run["settings"]["classes"] == list(ShapeWorldSemantic("val")[0].classes)
    scored = _metrics(capsys, preds / "semantic", preds / "semantic-gt")
    assert scored["num_images"] == 2 and scored["mIoU"] == pytest.approx(semantic["mIoU"], abs=1e-12)


def test_save_flags_errors(tmp_path, capsys):
    assert main([*EVAL, "--limit", "1", "--save-overlays", "--out", str(tmp_path / "r.json")]) == 2
    assert "--save-overlays needs --save-preds" in capsys.readouterr().err
    mine = tmp_path / "mine"
    (mine / "semantic").mkdir(parents=True)
    (mine / "semantic" / "notes.txt").write_text("keep me")
    argv = [*EVAL, "--limit", "1", "--tasks", "semantic", "--save-preds", str(mine), "--out", str(tmp_path / "r.json")]
    assert main(argv) == 2
    assert "lasagna eval did not write" in capsys.readouterr().err
    assert (mine / "semantic" / "notes.txt").read_text() == "keep me"


@pytest.mark.slow  # two torchrun processes each load the model: ~15-30 s
def test_two_processes_save_every_image_once(tmp_path, capsys):
    preds, report = tmp_path / "preds", tmp_path / "two.json"
    done = run_two_processes(
        [*EVAL, "--limit", "3", "--tasks", "semantic", "--save-preds", str(preds), "--out", str(report)]
    )
    assert done.returncode == 0, failed_run(done)
    assert sorted(p.name for p in (preds / "semantic" / "shapeworld" / "val").iterdir()) == [
        f"000000{i}" for i in range(3)
    ]
    scored = _metrics(capsys, preds / "semantic", preds / "semantic-gt")
    assert scored["mIoU"] == pytest.approx(json.loads(report.read_text())["semantic"]["mIoU"], abs=1e-12)


def test_a_limit_below_one_and_an_unknown_dataset_are_named(tmp_path, capsys):
    report = tmp_path / "r.json"
    assert main([*EVAL, "--limit", "0", "--out", str(report)]) == 2
    assert "--limit must be >= 1, got 0" in capsys.readouterr().err and not report.exists()
    assert main(["eval", "--dataset", "shapewrold", "--split", "val", "--out", str(report)]) == 2
    assert "'shapewrold'" in (err := capsys.readouterr().err) and "shapeworld" in err.replace("'shapewrold'", "")
