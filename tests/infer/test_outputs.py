"""An image's output files are replaced together, and what a killed run leaves behind is cleaned up."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lasagna.atomic import write_atomic_dir
from lasagna.cli import main

SEGMENT = ["segment", "examples/shapes.png", "--classes", "sky, grass"]


def test_an_overwriting_rerun_replaces_result_and_overlay_together(tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*SEGMENT, "--out", str(out)]) == 0
    first = (out / "shapes" / "overlay.png").read_bytes()
    other = ["segment", "examples/shapes.png", "--classes", "sky", "--out", str(out)]
    assert main(other) == 2  # other classes into the same run folder mix two answers: refused
    assert "other settings (classes differ)" in capsys.readouterr().err
    assert main([*other, "--overwrite"]) == 0
    result = json.loads((out / "shapes" / "result.json").read_text())
    assert [c["name"] for c in result["classes"]] == ["sky"] and (out / "shapes" / "overlay.png").read_bytes() != first
    assert not [p.name for p in out.rglob(".*")]  # no temporary sibling is left
    capsys.readouterr()


def test_a_folder_with_other_files_is_never_swapped_away(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main([*SEGMENT, "--out", str(out)]) == 2
    assert "holds files lasagna did not write (notes.txt)" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"


KILLED = """
import os, sys
from pathlib import Path
from lasagna.atomic import write_atomic_dir

def fill(folder):
    (folder / "result.json").write_text("new")
    os._exit(9)  # killed between the two files

write_atomic_dir(Path(sys.argv[1]), fill, overwrite=True)
"""


def test_a_kill_while_writing_leaves_the_old_pair_and_the_next_run_cleans_up(tmp_path):
    out = tmp_path / "out"

    def old(folder):
        (folder / "result.json").write_text("old")
        (folder / "overlay.png").write_bytes(b"old")

    write_atomic_dir(out, old)
    killed = subprocess.run([sys.executable, "-c", KILLED, str(out)], timeout=120)
    assert killed.returncode == 9
    assert (out / "result.json").read_text() == "old" and (out / "overlay.png").read_bytes() == b"old"
    stale = [p.name for p in tmp_path.iterdir() if p.name != "out"]
    assert len(stale) == 1 and stale[0].startswith(".out.tmp-")  # the dead writer's folder

    def new(folder):
        (folder / "result.json").write_text("new")
        (folder / "overlay.png").write_bytes(b"new")

    write_atomic_dir(out, new, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "overlay.png").read_bytes() == b"new"


def test_a_live_writers_temporary_folder_is_left_alone(tmp_path):
    mine = tmp_path / f".out.tmp-{os.getpid()}-x"
    mine.mkdir()
    write_atomic_dir(tmp_path / "out", lambda folder: (folder / "a").write_text("a"))
    assert mine.exists()


@pytest.mark.parametrize("out", ["", "   "])
def test_an_empty_out_is_refused(out, capsys):
    assert main([*SEGMENT, "--out", out]) == 2
    assert "--out must name a folder" in capsys.readouterr().err


def test_label_png_indexes_the_class_list_with_a_palette_and_void(tmp_path, capsys):
    from PIL import Image

    from lasagna.infer.outputs import LABEL_VOID

    out = tmp_path / "out"
    assert main(["segment", "examples/shapes.png", "--classes", "red circle, sky, blue square", "--out", str(out)]) == 0
    capsys.readouterr()
    result = json.loads((out / "shapes" / "result.json").read_text())
    with Image.open(out / "shapes" / "label.png") as im:
        assert im.mode == "P" and im.getpalette()[:3] != [0, 0, 0]
        label = np.asarray(im)
    assert label.shape == tuple(result["image_size"])
    values = set(label.ravel().tolist())
    present = {i for i, c in enumerate(result["classes"]) if c["present"]}
    assert present and values <= present | {LABEL_VOID}
    for i in present:  # every present class's pixels carry its index unless a surer class overlaps them
        assert (label == i).sum() > 0
