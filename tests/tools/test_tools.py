"""Smoke tests of the scripts in tools/: each prints its help and does one small real run (tiny models, seconds)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import decisive_model
from lasagna.api import Lasagna
from lasagna.checkpoint import read_config, read_weights, save_pretrained
from lasagna.config import preset
from lasagna.tokens import token_ids

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools"
NAMES = sorted(p.stem for p in TOOLS.glob("*.py"))


def load_tool(name: str) -> ModuleType:
    """tools/ is a folder of scripts, not a package: load one by its path."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_checkpoint(tokenizer, folder: Path, verifiers: tuple[str, ...] = ()) -> Path:
    """A saved untrained tiny model whose decoding says `<ins>` and `<no_ins>` both (helpers.decisive_model), with
    the named verifiers ("presence", "query") untrained."""
    model = decisive_model(tokenizer, seed=3)
    ids = token_ids(tokenizer)
    model.set_token_ids(ids.ins, ids.pad, ids.no_ins)
    from lasagna.config import JudgesConfig
    from lasagna.judges import Judges

    flags = JudgesConfig(presence_verifier="presence" in verifiers, query_verifier="query" in verifiers)
    judges = Judges.for_model(model, flags, seed=0) if flags.any else None
    return save_pretrained(model, tokenizer, folder, judges=judges)


def test_every_tool_is_tested_here():
    assert NAMES == [
        "add_grid_code",
        "compare_runs",
        "count_params",
        "grow_llm",
        "operating_points",
        "pretrain_encoders",
        "run_ablation",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_every_tool_prints_its_help_with_its_own_usage_line(name, capsys):
    with pytest.raises(SystemExit) as done:
        load_tool(name).main(["--help"])
    assert done.value.code == 0
    assert f"python tools/{name}.py" in capsys.readouterr().out


def test_a_tool_runs_as_a_script_from_the_repository_root():
    done = subprocess.run(
        [sys.executable, "tools/compare_runs.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "metrics.jsonl" in done.stdout


def test_count_params_counts_the_trainable_and_frozen_parameters_of_a_config(capsys):
    tool = load_tool("count_params")
    assert tool.main([str(ROOT / "configs/train/shapeworld-small.yaml")]) == 0
    trainable, frozen = (int(line.split()[1].replace(",", "")) for line in capsys.readouterr().out.splitlines())
    # The embedded model comes from this recipe: its weights are what was trained and what was frozen, the add-ons
    # aside, but for its vocabulary: the preset's 1024 rows, of which its fitted tokenizer kept fewer.
    embedded = ROOT / "src/lasagna/weights/shapeworld-small"
    weights = read_weights(embedded)
    add_ons = ("verifier.", "query_verifier.", "instance_picker.")
    llm = preset("shapeworld-small").llm
    unused_rows = llm.vocab_size - read_config(embedded).llm.vocab_size
    embedded_count = sum(v.numel() for k, v in weights.items() if not k.startswith(add_ons))
    assert trainable + frozen == embedded_count + 2 * unused_rows * llm.hidden_size  # input and output embeddings
    assert 0 < frozen < trainable


def test_compare_runs_averages_each_key_per_window_of_steps(tmp_path, capsys):
    for run, scale in (("a", 1.0), ("b", 2.0)):
        (tmp_path / run).mkdir()
        lines = [{"step": s, "ce": scale * s, "dice": 0.5} for s in range(1, 5)] + [{"step": 4, "mIoU": 0.3}]
        (tmp_path / run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    tool = load_tool("compare_runs")
    assert tool.main([str(tmp_path / "a"), str(tmp_path / "b"), "--every", "2"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 2
    assert "ce 1.500" in rows[0].split("|")[0] and "ce 3.000" in rows[0].split("|")[1]  # steps 1-2, (1+2)/2 and x2
    assert "ce 3.500" in rows[1] and "dice 0.500" in rows[1]
    with pytest.raises(SystemExit, match=r"metrics\.jsonl not found"):
        tool.main([str(tmp_path)])


def _same_answers(first: Path, second: Path) -> None:
    """Both models answer a class list alike: same decisions, scores and masks."""
    image = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    classes = ["sky", "red circle", "blue square", "tree"]
    a = Lasagna.from_pretrained(first).segment(image, classes=classes)
    b = Lasagna.from_pretrained(second).segment(image, classes=classes)
    assert [c.present for c in a.classes] == [c.present for c in b.classes]
    assert [c.score for c in a.classes] == pytest.approx([c.score for c in b.classes], abs=1e-6)
    for x, y in zip(a.classes, b.classes, strict=True):
        assert (x.mask is None and y.mask is None) or np.array_equal(x.mask, y.mask)


def test_add_grid_code_adds_a_zero_map_and_the_model_answers_as_before(tiny_tokenizer, tmp_path, capsys):
    base = tiny_checkpoint(tiny_tokenizer, tmp_path / "base")
    tool = load_tool("add_grid_code")
    assert tool.main(["--model", str(base), "--out", str(tmp_path / "grid"), "--width", "8"]) == 0
    assert read_config(tmp_path / "grid").image_grid_code == 8
    before, after = read_weights(base), read_weights(tmp_path / "grid")
    assert set(after) - set(before) == {"image_grid.weight"} and not after["image_grid.weight"].any()
    assert all(torch.equal(before[k], after[k]) for k in before)
    _same_answers(base, tmp_path / "grid")
    with pytest.raises(SystemExit):
        tool.main(["--model", str(tmp_path / "grid"), "--out", str(tmp_path / "again")])
    assert "already has a grid code" in capsys.readouterr().err


def test_grow_llm_adds_layers_that_add_nothing_until_trained(tiny_tokenizer, tmp_path, capsys):
    base = tiny_checkpoint(tiny_tokenizer, tmp_path / "base")
    layers = read_config(base).llm.num_hidden_layers
    tool = load_tool("grow_llm")
    assert tool.main(["--model", str(base), "--out", str(tmp_path / "grown"), "--layers", str(layers + 1)]) == 0
    assert read_config(tmp_path / "grown").llm.num_hidden_layers == layers + 1
    before, after = read_weights(base), read_weights(tmp_path / "grown")
    new = {k for k in after if k.startswith(f"llm.model.layers.{layers}.")}
    assert set(after) - set(before) == new
    assert not after[f"llm.model.layers.{layers}.self_attn.o_proj.weight"].any()
    assert after[f"llm.model.layers.{layers}.self_attn.q_proj.weight"].any()
    _same_answers(base, tmp_path / "grown")
    with pytest.raises(SystemExit):
        tool.main(["--model", str(base), "--out", str(tmp_path / "x"), "--layers", str(layers)])
    assert "must exceed" in capsys.readouterr().err


def test_operating_points_tabulates_the_presence_verifier_and_keeps_its_evidence(tiny_tokenizer, tmp_path, capsys):
    model = tiny_checkpoint(tiny_tokenizer, tmp_path / "model", verifiers=("presence",))
    evidence = tmp_path / "evidence.safetensors"
    args = ["--model", str(model), "--limit", "1", "--weights", "1,2", "--evidence", str(evidence)]
    tool = load_tool("operating_points")
    assert tool.main(args) == 0
    printed = capsys.readouterr().out
    assert "presence verifier, val" in printed and "query verifier" not in printed
    assert "| model's |" in printed and "| 1 |" in printed and "| 2 |" in printed
    assert set(load_file(evidence)) == {"presence_evidence", "presence_present"}
    assert tool.main(args) == 0  # the second run reads the evidence back: the same table
    assert capsys.readouterr().out == printed


def test_operating_points_tabulates_the_query_verifier_from_kept_evidence(tiny_tokenizer, tmp_path, capsys):
    # why kept evidence: an untrained model's answers to a scene's queries take long to decode and may lack a kind
    model = tiny_checkpoint(tiny_tokenizer, tmp_path / "model", verifiers=("query",))
    present = torch.tensor([True, False] * 8)
    evidence = {"query_evidence": torch.randn(16, 2) + present[:, None] * 2.0, "query_present": present}
    save_file(evidence, str(tmp_path / "evidence.safetensors"))
    tool = load_tool("operating_points")
    assert tool.main(["--model", str(model), "--evidence", str(tmp_path / "evidence.safetensors")]) == 0
    printed = capsys.readouterr().out
    assert "query verifier, val: 8 present, 8 absent" in printed and "| T-acc | N-acc |" in printed
    assert printed.count("\n| ") == 1 + 1 + 8  # header, rule, the model's fusion and one row per default weight


def test_pretrain_encoders_writes_the_encoders_that_lasagna_train_reads(tmp_path, capsys):
    tool = load_tool("pretrain_encoders")
    overrides = [
        "model_preset=tiny",
        "model_overrides={}",  # the recipe's stem skips need the stem the tiny preset lacks
        "tokenizer_vocab=300",
        "tokenizer_corpus=20",
        "data.image_size=32",
        "bf16=false",
        "encoders.steps=2",
        "encoders.batch_size=2",
        "encoders.eval_every=0",
    ]
    config = str(ROOT / "configs/train/shapeworld-small.yaml")
    assert tool.main(["--out", str(tmp_path), "--config", config, *overrides]) == 0
    assert (tmp_path / "encoders.safetensors").exists() and (tmp_path / "encoders.json").exists()
    assert "seconds" in json.loads(capsys.readouterr().out)


def test_run_ablation_refuses_missing_encoders_and_tabulates_rows_already_done(tmp_path, capsys):
    tool = load_tool("run_ablation")
    with pytest.raises(SystemExit, match="encoder weights not found"):
        tool.main(["--out", str(tmp_path), "--encoders", str(tmp_path / "none.safetensors")])
    for name in ("encoders", "decoder"):
        (tmp_path / f"{name}.safetensors").write_bytes(b"")
    out = tmp_path / "ablation"
    (out / "e-order" / "final").mkdir(parents=True)
    semantic = {"mIoU": 0.5, "present_recall": 0.9, "absent_rejection": 0.8, "name_disagreements": 1, "images": 3}
    (out / "e-order" / "eval.json").write_text(json.dumps({"semantic": semantic}))
    log = [{"step": 1, "tokens": 40, "seconds": 2.0}, {"step": 2, "tokens": 60, "seconds": 5.0}]
    (out / "e-order" / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in log))
    files = ["--encoders", str(tmp_path / "encoders.safetensors"), "--decoder", str(tmp_path / "decoder.safetensors")]
    assert tool.main(["--out", str(out), "--rows", "e-order", "--skip-done", *files]) == 0
    assert "| e-order | 0.500 | 0.900 | 0.800 | 1 | 50 | 5 |" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary[0]["steps"] == 2 and (out / "summary.md").exists()
    with pytest.raises(SystemExit, match="unknown rows"):
        tool.main(["--out", str(out), "--rows", "f-none", *files])
