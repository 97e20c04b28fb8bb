"""benchmarks/memory.py: its byte counts are those of real models in each setting (the tiny preset, built here)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lasagna.config import preset
from lasagna.model.lasagna import LasagnaModel
from lasagna.quantize import QuantizeError, load_bitsandbytes, quantize_linears, stored_bytes

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "memory.py"


def _load():
    spec = importlib.util.spec_from_file_location("memory_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _counted(memory, model: LasagnaModel, setting: str) -> dict[str, int]:
    head = model.llm.get_output_embeddings()
    quantized = {id(m) for m in model.llm.modules() if type(m) is nn.Linear and m is not head}
    return {part: memory.tensor_bytes(mods, setting, quantized)[2] for part, mods in memory.parts(model).items()}


@pytest.mark.parametrize("setting", ["fp32", "bf16", "8bit", "4bit"])
def test_counts_match_a_real_model(setting):
    memory = _load()
    with torch.device("meta"):
        counted = _counted(memory, LasagnaModel(preset("tiny")), setting)
    model = LasagnaModel(preset("tiny")).to(torch.float32 if setting == "fp32" else torch.bfloat16)
    if setting in ("8bit", "4bit"):
        try:
            load_bitsandbytes()
        except QuantizeError as err:
            pytest.skip(str(err))
        head = model.llm.get_output_embeddings()
        quantize_linears(model.llm, setting, torch.device("cpu"), torch.bfloat16, keep=[head])
    real = {part: sum(stored_bytes(m) for m in mods) for part, mods in memory.parts(model).items()}
    assert counted == real
    assert sum(real.values()) == stored_bytes(model)  # the rows cover the whole model once


def test_prints_the_table():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--preset", "tiny"], capture_output=True, text=True, timeout=120, check=True
    )
    lines = done.stdout.splitlines()
    assert "| part | parameters | buffers | fp32 | bf16 | fp16 | 8bit | 4bit |" in lines
    assert lines[-1].startswith("| **total** |")
