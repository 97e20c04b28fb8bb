"""`lasagna train` and `lasagna export` through the command line, as the docs run them."""

import json

import pytest

from helpers import TINY
from lasagna.checkpoint import load_pretrained
from lasagna.cli import main


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """accelerate keeps one state per process; each run here may ask for its own mixed precision."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()


def test_train_then_export_writes_a_checkpoint_that_loads(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", f"out_dir={run}", *TINY, "optim.steps=2"]) == 0
    assert f"final model: {run / 'final'}" in capsys.readouterr().out

    out = tmp_path / "exported"
    assert main(["export", "--ckpt", str(run), "--out", str(out), "--dtype", "fp32"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    model, _ = load_pretrained(out)
    assert not any("lora" in k for k in model.state_dict())


def test_export_of_a_missing_run_is_one_line_naming_it(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert main(["export", "--ckpt", str(missing), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lasagna export: error:") and str(missing) in err


def test_a_fresh_run_into_an_out_dir_with_checkpoints_is_refused_unless_told(tmp_path, capsys):
    """Without the refusal the new run's checkpoints were pruned at once (the old run's steps are higher), and a
    later --resume continued the old run under the new config."""
    run = tmp_path / "run"
    assert main(["train", f"out_dir={run}", *TINY, "optim.steps=3"]) == 0
    capsys.readouterr()
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert main(["train", f"out_dir={run}", *TINY, "optim.steps=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(run) in err and "step-0000003" in err and "--resume" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before  # the old run is untouched
    assert main(["train", f"out_dir={run}", *TINY, "optim.steps=2", "--overwrite"]) == 0
    assert "step-0000003" not in [p.name for p in (run / "checkpoints").iterdir()]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 2  # the old run's log went with its checkpoints
    assert (run / "tokenizer").is_dir()  # saved again by the new run
    assert main(["train", f"out_dir={run}", *TINY, "--resume", "--overwrite"]) == 2


def test_resume_without_a_checkpoint_says_the_run_starts_fresh(tmp_path, capsys, caplog):
    run = tmp_path / "run"
    with caplog.at_level("WARNING", logger="lasagna.train.fit"):
        assert main(["train", f"out_dir={run}", *TINY, "optim.steps=1", "--resume"]) == 0
    assert any("holds no checkpoint yet, so this run starts fresh" in r.getMessage() for r in caplog.records)
