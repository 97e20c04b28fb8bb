"""The side-by-side benchmarks `startup.py` and `inference.py`: their helpers on made-up inputs (fast), and one real
run of each against the old commit in a temporary worktree (slow: each loads two trees' models)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    """Import a script of benchmarks/ (a folder of scripts that import each other by name)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def load(name: str) -> ModuleType:
        return importlib.import_module(name)

    return load


@pytest.mark.parametrize("name", ["startup", "inference"])
def test_the_script_prints_its_help_with_its_own_usage_line(bench, name, capsys):
    with pytest.raises(SystemExit) as done:
        bench(name).main(["--help"])
    assert done.value.code == 0
    assert f"python benchmarks/{name}.py" in capsys.readouterr().out


def test_turns_alternate_which_tree_goes_first(bench):
    trees = bench("trees")
    a, b = trees.Tree("a", ROOT), trees.Tree("b", ROOT)
    assert [t.label for t in trees.turns(3, (a, b))] == ["a", "b", "b", "a", "a", "b"]
    assert a.env(threads=2)["PYTHONPATH"] == str(ROOT / "src") and a.env()["OMP_NUM_THREADS"] == "1"


def test_an_unknown_old_commit_is_named_in_the_error(bench):
    with pytest.raises(ValueError, match="no-such-rev"):
        bench("trees").resolve("no-such-rev")


IMPORTTIME = """import time: self [us] | cumulative | imported package
import time:       300 |        300 |       sympy.core
import time:       100 |        400 |     sympy
import time:      2000 |       2400 |   torch
import time:        50 |       2450 | lasagna.api
lasagna-startup: the model loads
import time:      1000 |       1000 |   transformers
import time:        10 |       1010 | lasagna.checkpoint
"""


def test_importtime_is_split_at_the_model_load_and_each_heavy_module_names_its_importers(bench):
    startup = bench("startup")
    before, after = startup.parse_importtime(IMPORTTIME)
    assert [n for *_, n in before] == ["sympy.core", "sympy", "torch", "lasagna.api"]
    assert [n for *_, n in after] == ["transformers", "lasagna.checkpoint"]
    assert startup.chain(before, "sympy") == "sympy <- torch <- lasagna.api"
    assert startup.chain(after, "transformers") == "transformers <- lasagna.checkpoint"
    assert startup.chain(after, "sympy") is None
    assert startup.by_package(before)[0] == ("torch", pytest.approx(0.002))


def test_agreement_counts_images_classes_and_mask_overlap(bench):
    inference = bench("inference")
    full, half = np.ones((1, 2, 2), bool), np.array([[[True, True], [False, False]]])
    a = [{"present": [True, False], "masks": full}, {"present": [False, False], "masks": np.zeros((0, 2, 2), bool)}]
    b = [{"present": [True, False], "masks": half}, {"present": [True, False], "masks": full}]
    assert inference.agreement(a, b) == "1/2 img 3/4 cls IoU 0.500"
    decisions = [{"llm_present": [True, None]}], [{"llm_present": [True, False]}]
    assert inference.agreement(*decisions, key="llm_present") == "0/1 img 1/2 cls"


def test_lists_are_the_shapeworld_names_then_made_up_ones(bench):
    from lasagna.shapeworld import classes

    names = bench("inference").class_list(150)
    assert names[:70] == list(classes("test-open")) and len(set(names)) == 150
    assert set(names[70:]).isdisjoint(set(classes("train")) | set(classes("test-open")))


def run_script(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)


@pytest.mark.slow
def test_inference_quick_compares_the_old_commit_and_this_tree_with_agreement():
    done = run_script(["benchmarks/inference.py", "--quick"])
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    rows = [line for line in lines if line.strip().startswith(("4 ", "6 ")) and "template" in line]
    assert len(rows) == 2 and all("img" in r and "cls" in r for r in rows)
    released = [line for line in lines if line.strip().startswith(("4 |", "6 |"))]
    # the constrained procedure and template decoding of the same one-list prompt give the same answers
    assert len(released) == 2 and all("1/1 img" in r.split("|")[-1] for r in released)


@pytest.mark.slow
def test_startup_compares_cpu_before_the_model_loads():
    done = run_script(["benchmarks/startup.py", "--runs", "1", "--top", "3"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "segment: CPU s before the model loads" in done.stdout
    assert "this tree: of torch, transformers, torch._dynamo, sympy, imported before the model loads: none" in (
        done.stdout
    )


def test_the_verifier_band_counts_skipped_slots_and_changed_answers(bench, capsys):
    llm = torch.tensor([-8.5, -7.2, -6.5, -3.0, 2.0])
    evidence = torch.stack([llm, torch.zeros_like(llm)], -1)
    present = torch.tensor([False, False, True, False, True])
    bench("verifier_band").report("toy", evidence, present)
    out = capsys.readouterr().out
    assert "LLM log-odds in [-8.50, 2.00]" in out and "of which the LLM answered absent 1" in out
    assert "lowest LLM log-odds of a slot fused present: -6.50" in out
    rows = {
        float(line.split("|")[0]): line.split("|")[1:] for line in out.splitlines() if line.strip()[:1] in ("-", "0")
    }
    assert [float(rows[-7.0][0]), int(rows[-7.0][1])] == [0.4, 0]  # two of five below -7, neither present
    assert [float(rows[-6.0][0]), int(rows[-6.0][1])] == [0.6, 1]  # the -6.5 slot the verifier turned present


def test_kernels_and_verifier_band_run_on_the_embedded_model(bench, capsys):
    assert bench("kernels").main(["--images", "1", "--classes", "4", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "fused/eager" in out and "4/4 cls" in out
    assert bench("verifier_band").main(["--splits", "val", "--scenes", "1"]) == 0
    assert "val: 58 slots" in capsys.readouterr().out
