"""Start-up: `lasagna --help`, `import lasagna.api` and `lasagna segment` import only what the call needs.

Each check runs in a fresh interpreter and reads its `sys.modules`, so a module-level import added anywhere on the
path (a command module, the API, preprocessing) fails here. `benchmarks/startup.py` measures what these save.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lasagna.cli import COMMAND_MODULES, command_of

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "torch._dynamo", "sympy", "peft", "accelerate")
"""Seconds of CPU to import; none is needed before a model loads."""
NOT_FOR_SEGMENT = ("lasagna.train", "lasagna.eval", "lasagna.serve", "lasagna.data", "lasagna.shapeworld")
"""Training, evaluation, serving and dataset code: `lasagna segment` needs none of it, even once the model runs."""


def modules_after(code: str, tmp_path: Path) -> set[str]:
    """The modules a fresh interpreter holds after running `code` (which may end in SystemExit)."""
    script = f"""
import atexit, json, sys
atexit.register(lambda: print("MODULES" + json.dumps(sorted(sys.modules))))
{code}
"""
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout.rsplit("MODULES", 1)[1]))


def loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(f"{p}.") for p in packages))


def test_help_imports_neither_torch_nor_transformers(tmp_path):
    modules = modules_after("from lasagna.cli import main\nmain(['--help'])", tmp_path)
    assert "lasagna.infer.cli" in modules and "lasagna.train.cli" in modules  # every command was listed
    assert loaded(modules, HEAVY) == []
    assert loaded(modules, ("lasagna.api", "lasagna.model", "lasagna.judges.bundle")) == []


def test_importing_the_api_imports_no_torch(tmp_path):
    modules = modules_after("from lasagna import Lasagna\nimport lasagna.api", tmp_path)
    assert loaded(modules, HEAVY) == []


def test_segment_imports_nothing_heavy_before_the_model_loads(tmp_path):
    image, classes = ROOT / "examples" / "shapes.png", ROOT / "examples" / "shapes-classes.txt"
    code = f"""
from lasagna.api import Lasagna
def stop(*args, **kwargs):
    raise SystemExit(0)
Lasagna.from_pretrained = stop
from lasagna.cli import main
main(["segment", {str(image)!r}, "--classes-file", {str(classes)!r}, "--out", "out"])
raise SystemExit(1)
"""
    modules = modules_after(code, tmp_path)
    assert "lasagna.infer.cli" in modules
    assert loaded(modules, HEAVY) == []
    assert loaded(modules, (*NOT_FOR_SEGMENT, "lasagna.judges", "lasagna.convert")) == []


def test_a_whole_segment_call_imports_no_training_evaluation_serving_or_dataset_code(tmp_path):
    image = tmp_path / "scene.png"
    image.write_bytes((ROOT / "examples" / "shapes.png").read_bytes())
    code = f"""
import sys
from lasagna.cli import main
sys.exit(main(["segment", {str(image)!r}, "--classes", "sky, grass, red circle", "--out", "out"]))
"""
    modules = modules_after(code, tmp_path)
    assert "lasagna.model.lasagna" in modules and (tmp_path / "out" / "scene" / "result.json").exists()
    assert loaded(modules, NOT_FOR_SEGMENT) == []
    assert loaded(modules, ("peft",)) == []


def test_the_command_table_names_what_each_module_registers():
    for name, commands in COMMAND_MODULES.items():
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(name).register(sub)
        assert tuple(sub.choices) == commands, name


@pytest.mark.parametrize(
    ("argv", "command"),
    [(["segment", "a.png"], "segment"), (["--debug", "train", "x=1"], "train"), (["--help"], None), ([], None)],
)
def test_the_command_is_the_first_word_that_is_not_an_option(argv, command):
    assert command_of(argv) == command
