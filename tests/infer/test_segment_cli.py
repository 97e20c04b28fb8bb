"""`lasagna segment`'s reading of its class list (`infer/cli.py`): files as editors write them, bad files named."""

from types import SimpleNamespace

import pytest

from lasagna.infer.cli import read_classes


def _from_file(path):
    return read_classes(SimpleNamespace(classes=None, classes_file=str(path)))


def test_a_classes_file_with_a_bom_crlf_comments_and_blank_lines(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_bytes("\ufeff# mine\r\nsky\r\n\r\n  red circle  \r\n# more\r\ngrass\r\n".encode())
    assert _from_file(path) == ["sky", "red circle", "grass"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.mkdir(), "is a folder"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe"), "not UTF-8 text"),
    ],
)
def test_a_classes_file_that_is_no_text_file_is_named(tmp_path, make, message):
    path = tmp_path / "classes.txt"
    make(path)
    with pytest.raises(ValueError, match=message) as info:
        _from_file(path)
    assert str(path) in str(info.value)


def test_a_class_list_over_the_models_positions_leaves_no_run_folder(run_ckpt, tmp_path, capsys):
    from helpers import write_scenes
    from lasagna.cli import main

    write_scenes(tmp_path / "imgs", 2)
    names = ", ".join(f"name {i} " + "zebra quilt " * 15 for i in range(16))
    out = tmp_path / "out"
    argv = ["segment", str(tmp_path / "imgs"), "--model", str(run_ckpt), "--out", str(out), "--workers", "0"]
    assert main([*argv, "--classes", names]) == 2
    assert "use a smaller chunk_size" in capsys.readouterr().err
    assert not out.exists()  # a rerun with a list that fits is not refused as another run's folder
    assert main([*argv, "--classes", "sky, tree"]) == 0


def test_a_failed_image_is_named_once_in_the_summary(run_ckpt, tmp_path, capsys):
    from helpers import write_scenes
    from lasagna.cli import main

    write_scenes(tmp_path / "imgs", 1)
    broken = tmp_path / "imgs" / "broken.png"
    broken.write_bytes(b"x")
    argv = ["segment", str(tmp_path / "imgs"), "--classes", "sky", "--out", str(tmp_path / "out"), "--no-overlay"]
    assert main([*argv, "--model", str(run_ckpt)]) == 1
    failed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1 and failed[0].count(str(broken)) == 1
