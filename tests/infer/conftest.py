"""Fixtures of the segment-run tests: a tiny checkpoint on disk and a folder of small images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import decisive_model
from lasagna.checkpoint import save_pretrained


@pytest.fixture(scope="module")
def run_ckpt(tiny_tokenizer, tmp_path_factory) -> Path:
    """A tiny random checkpoint that answers some classes present and some absent."""
    return save_pretrained(
        decisive_model(tiny_tokenizer, seed=0), tiny_tokenizer, tmp_path_factory.mktemp("ckpt") / "model"
    )


@pytest.fixture
def one_thread():
    """torch on one thread, as the subprocesses run (OMP_NUM_THREADS=1), so their floats match ours bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
