"""Segment runs across processes: a run killed with SIGKILL resumes to a clean run's files, and two processes
write what one does."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from helpers import SEGMENT_CLASSES, failed_run, run_two_processes, write_scenes
from lasagna.cli import main

# A run whose every image takes a while after it is written, so that the test can kill it mid-run.
SLOW_RUN = """
import sys, time
from lasagna.infer import run

real = run.write_image_outputs

def slow(*args, **kwargs):
    done = real(*args, **kwargs)
    time.sleep(0.3)
    return done

run.write_image_outputs = slow
from lasagna.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _done(out: Path) -> list[Path]:
    """The image folders in place (a writer's temporary folder is hidden, its name starts with a dot)."""
    found = [p.parent for p in out.rglob("result.json")]
    return sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(out).parts))


def _children(pid: int) -> list[int]:
    """The processes `pid` started (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _args(folder: Path, ckpt: Path, out: Path) -> list[str]:
    return [
        "segment",
        str(folder),
        "--recursive",
        "--classes",
        SEGMENT_CLASSES,
        "--model",
        str(ckpt),
        "--out",
        str(out),
    ]


def test_a_killed_run_resumes_to_the_files_of_a_clean_run(run_ckpt, tmp_path, capsys, one_thread):
    write_scenes(tmp_path / "imgs", 8)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    cmd = [sys.executable, "-c", SLOW_RUN, *_args(tmp_path / "imgs", run_ckpt, out), "--workers", "1"]
    killed = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not _done(out) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    _, err = killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL, err.decode()[-2000:]
    done = _done(out)
    assert 1 <= len(done) < 8  # killed mid-run
    for folder in done:  # every folder is whole
        assert {p.name for p in folder.iterdir()} == {"result.json", "overlay.png", "label.png"}
    kept = {folder: (folder / "result.json").stat().st_ino for folder in done}

    assert main([*_args(tmp_path / "imgs", run_ckpt, out), "--workers", "0"]) == 0
    assert f"{8 - len(done)} image(s) segmented, {len(done)} already done" in capsys.readouterr().out
    assert all((folder / "result.json").stat().st_ino == ino for folder, ino in kept.items())  # not redone
    assert main([*_args(tmp_path / "imgs", run_ckpt, tmp_path / "clean"), "--workers", "0"]) == 0
    capsys.readouterr()
    resumed, clean = _files(out), _files(tmp_path / "clean")
    assert list(resumed) == list(clean)  # no temporary file is left either
    assert len(clean) == 8 * 3 + 5
    for name, data in clean.items():
        assert resumed[name] == data, name


def test_two_processes_write_what_one_does(run_ckpt, tmp_path, capsys, one_thread):
    write_scenes(tmp_path / "imgs", 5)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG broken")
    assert main([*_args(tmp_path / "imgs", run_ckpt, tmp_path / "one"), "--workers", "0"]) == 1
    capsys.readouterr()
    done = run_two_processes([*_args(tmp_path / "imgs", run_ckpt, tmp_path / "two"), "--workers", "0"])
    assert done.returncode == 1, failed_run(done)
    assert done.stdout.count("image(s) segmented") == 1, done.stdout  # the first process alone sums up
    assert "5 image(s) segmented, 0 already done, 1 failed" in done.stdout
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert list(two) == list(one) and len(one) == 5 * 3 + 5
    for name, data in one.items():
        assert two[name] == data, name


def test_workers_do_not_outlive_a_killed_run(run_ckpt, tmp_path):
    """Large decoded images fill the pipe from a worker to the run; once the run is killed, a worker blocked on it
    would wait forever unless the system kills it with its parent."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (1600, 1600, 3), dtype=np.uint8)).save(imgs / f"big{i}.png")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    args = [*_args(imgs, run_ckpt, out), "--workers", "2", "--no-overlay"]
    killed = subprocess.Popen([sys.executable, "-c", SLOW_RUN, *args], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not _done(out) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(1.0)  # the workers run ahead and fill the pipe
    workers = _children(killed.pid)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert len(workers) == 2
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in workers if _alive(pid)]
    for pid in left:  # never leave them behind, even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left
