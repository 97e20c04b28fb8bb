"""benchmarks/gpu_check.sh and .py: a clear exit where there is no GPU (this machine), and the whole measuring path
rehearsed on the CPU with the tiny preset (slow)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], env: dict[str, str], timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_shell_script_stops_before_installing_without_a_gpu(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {**os.environ, "GPU_CHECK_VENV": str(tmp_path / "venv"), "PATH": f"{bin_dir}:/usr/bin:/bin"}
    for smi in (None, "#!/bin/sh\nexit 9\n", "#!/bin/sh\necho 'No devices found.'\n"):  # absent, failing, no GPU
        if smi is not None:
            (bin_dir / "nvidia-smi").write_text(smi)
            (bin_dir / "nvidia-smi").chmod(0o755)
        done = _run(["bash", "benchmarks/gpu_check.sh"], env)
        assert done.returncode == 3, done.stderr
        assert "no NVIDIA GPU on this machine" in done.stderr and "nothing was installed" in done.stderr
        assert not (tmp_path / "venv").exists()


def test_the_python_helper_needs_cuda():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": ""}  # hides any GPU
    done = _run([sys.executable, "benchmarks/gpu_check.py", "--work", "/nonexistent"], env)
    assert done.returncode == 3 and "sees no CUDA GPU" in done.stderr


@pytest.mark.slow
def test_a_cpu_rehearsal_prints_the_table(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    args = ["--preset", "tiny", "--device", "cpu", "--images", "4", "--timed", "1", "--settings", "bf16,4bit"]
    done = _run([sys.executable, "benchmarks/gpu_check.py", *args, "--work", str(tmp_path / "w")], env, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tokenizer of 32007 entries" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| bf16 |", "| 4bit |"))]
    assert len(rows) == 2 and not (tmp_path / "w").exists()
