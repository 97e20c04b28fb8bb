import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import failed_run, run_two_processes
from lasagna import rle
from lasagna.checkpoint import save_pretrained
from lasagna.cli import main
from lasagna.config import preset
from lasagna.model.lasagna import LasagnaModel
from lasagna.tokens import token_ids


@pytest.fixture
def tiny_ckpt(tiny_tokenizer, tmp_path):
    torch.manual_seed(0)
    cfg = preset("tiny")
    cfg.llm.vocab_size = len(tiny_tokenizer)
    model = LasagnaModel(cfg)
    ids = token_ids(tiny_tokenizer)
    model.set_token_ids(ids.ins, ids.pad)
    return save_pretrained(model, tiny_tokenizer, tmp_path / "ckpt")


def test_segment_writes_result_and_overlay(tiny_ckpt, tmp_path, capsys):
    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    code = main(["segment", str(image), "--classes", "wall, bed, sky", "--model", str(tiny_ckpt), "--out", str(out)])
    assert code == 0
    result = json.loads((out / "img" / "result.json").read_text())
    assert result["image_size"] == [30, 40]
    assert [c["name"] for c in result["classes"]] == ["wall", "bed", "sky"]
    for c in result["classes"]:
        if c["present"]:
            assert rle.decode(c["mask"]).sum() == c["area"]
    assert Image.open(out / "img" / "overlay.png").size[1] >= 30
    assert "wrote" in capsys.readouterr().out


def test_segment_errors_name_the_problem(tiny_ckpt, tmp_path, capsys):
    missing = tmp_path / "nope.png"
    assert main(["segment", str(missing), "--classes", "wall", "--model", str(tiny_ckpt)]) == 2
    assert "nope.png" in capsys.readouterr().err
    empty = tmp_path / "classes.txt"
    empty.write_text("\n# nothing\n")
    img = tmp_path / "i.png"
    Image.new("RGB", (8, 8)).save(img)
    assert main(["segment", str(img), "--classes-file", str(empty), "--model", str(tiny_ckpt)]) == 2
    assert "empty" in capsys.readouterr().err


def _shapeworld_eval(ckpt, limit: int) -> list[str]:
    return ["eval", "--model", str(ckpt), "--dataset", "shapeworld", "--split", "val", "--limit", str(limit)]


def test_eval_reports_metrics_on_shapeworld(tiny_ckpt, tmp_path):
    report = tmp_path / "report.json"
    assert main([*_shapeworld_eval(tiny_ckpt, 1), "--out", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["semantic"]["images"] == 1 and 0.0 <= data["semantic"]["pixel_acc"] <= 1.0
    assert 0.0 <= data["referring"]["cIoU"] <= 1.0 and data["merge"] == "score"
    assert data["reasoning"]["num_samples"] == 1 and 0.0 <= data["reasoning"]["gIoU"] <= 1.0
    released = tmp_path / "released.json"
    args = ["--tasks", "semantic", "--merge", "logit", "--out", str(released)]
    assert main([*_shapeworld_eval(tiny_ckpt, 1), *args]) == 0
    assert json.loads(released.read_text())["merge"] == "logit"


def test_eval_sharded_over_two_processes_matches_one(tiny_ckpt, tmp_path):
    args = [*_shapeworld_eval(tiny_ckpt, 3), "--tasks", "semantic"]
    assert main([*args, "--out", str(tmp_path / "one.json")]) == 0
    done = run_two_processes([*args, "--out", str(tmp_path / "two.json")])
    assert done.returncode == 0, failed_run(done)
    one = json.loads((tmp_path / "one.json").read_text())["semantic"]
    two = json.loads((tmp_path / "two.json").read_text())["semantic"]
    for key in ("mIoU", "pixel_acc", "present_recall", "absent_rejection", "name_disagreements"):
        assert two[key] == pytest.approx(one[key]), key
