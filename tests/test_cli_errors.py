"""The command line with bad input: one clear line and a non-zero exit, never a traceback (unless --debug)."""

import json

import pytest

from lasagna.cli import main


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "missing.png"), "--classes", "sky"]) == 2
    assert "missing.png" in _err(capsys)
    assert main(["segment", str(tmp_path), "--classes", "sky"]) == 2  # a folder where an image belongs
    assert _err(capsys).count("\n") == 1
    assert main(["segment", "examples/shapes.png", "--classes-file", str(tmp_path / "none.txt")]) == 2
    assert "none.txt" in _err(capsys)
    assert main(["train", "optim.lr=-1", f"out_dir={tmp_path / 'run'}"]) == 2
    assert "optim.lr must be a finite number" in _err(capsys) and not (tmp_path / "run").exists()
    assert main(["info", "--model", str(tmp_path)]) == 2
    assert "config.json is missing" in _err(capsys)


def test_an_output_that_cannot_be_written_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    assert main(["segment", "examples/shapes.png", "--classes", "sky", "--out", str(blocker / "out")]) == 2
    assert "file" in _err(capsys)
    assert main(["segment", "examples/shapes.png", "--classes", "sky", "--out", ""]) == 2
    assert "--out" in _err(capsys)


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "segment", str(tmp_path / "missing.png"), "--classes", "sky"])


def test_info_says_what_the_embedded_model_knows(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (
        len(info["vocabulary"]) == 58 and "red circle" in info["vocabulary"] and "red square" not in info["vocabulary"]
    )
    assert info["judges"] == ["presence_verifier", "query_verifier", "instance_picker"]
    assert info["default_decoder"] == "template" and info["max_positions"] == 1024
    assert info["parameters"]["total"] == sum(v for k, v in info["parameters"].items() if k != "total")
    assert main(["info"]) == 0
    assert "58 names" in capsys.readouterr().out


def test_names_outside_the_vocabulary_are_warned_about_once_each(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", "examples/shapes.png", "--classes", "sky, person, Red Circle", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "'person' is not among the 58 class names" in err
    result = json.loads((out / "shapes" / "result.json").read_text())
    assert result["warnings"] == ["'person' is not among the 58 class names this model was trained on"]


def test_the_api_warns_with_a_user_warning_and_an_open_model_never_does(tiny_tokenizer, tmp_path):
    import numpy as np

    from helpers import decisive_model
    from lasagna.api import Lasagna
    from lasagna.checkpoint import save_pretrained

    image = np.full((24, 24, 3), 120, np.uint8)
    with pytest.warns(UserWarning, match="'a person' is not among"):
        pred = Lasagna.from_pretrained().segment(image, classes=["sky", "a person"])
    assert len(pred.warnings) == 1
    folder = save_pretrained(decisive_model(tiny_tokenizer, 3), tiny_tokenizer, tmp_path / "open")
    open_model = Lasagna.from_pretrained(folder)
    assert open_model.vocabulary is None
    assert open_model.segment(image, classes=["sky", "a person"], decoder="template").warnings == []
