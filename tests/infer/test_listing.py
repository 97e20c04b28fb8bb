"""Which images a segment run reads and the output folder each gets: files, folders, globs, @lists, clashes."""

from pathlib import Path

import pytest
from PIL import Image

from lasagna.infer.listing import ImageListError, find_images


def _images(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(path)


def _rels(items) -> list[str]:
    return [item.rel for item in items]


def test_a_folder_gives_its_images_relative_to_it_without_suffix(tmp_path, monkeypatch):
    _images(tmp_path / "imgs", "b.jpg", "a.PNG", "sub/c.png", ".hidden.png", "sub/.cache/d.png")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    monkeypatch.chdir(tmp_path)
    assert _rels(find_images(["imgs"])) == ["a", "b"]
    items = find_images(["imgs/"], recursive=True)
    assert _rels(items) == ["a", "b", "sub/c"]
    assert [i.file_name for i in items] == ["a.PNG", "b.jpg", "sub/c.png"]
    assert items[2].path == Path("imgs/sub/c.png")


def test_files_globs_and_lists(tmp_path, monkeypatch):
    _images(tmp_path / "imgs", "a/x.png", "b/x.png", "b/y.png", "top.png")
    monkeypatch.chdir(tmp_path)
    assert _rels(find_images(["imgs/a/x.png"])) == ["x"]  # a file named directly: its name
    assert _rels(find_images(["imgs/*/x.png"])) == ["a/x", "b/x"]  # a glob: from the part before the wildcard
    assert _rels(find_images(["imgs/**/*.png"])) == ["a/x", "b/x", "b/y", "top"]
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "val.txt").write_text("# two images\n../imgs/b/y.png\n\n/dev/null/none.png\n")
    with pytest.raises(FileNotFoundError, match=r"val.txt line 4: .*none.png"):
        find_images(["@lists/val.txt"])
    (tmp_path / "list.txt").write_text("imgs/a/x.png\nimgs/b\n")  # relative to the list's folder
    items = find_images(["@list.txt"])
    assert _rels(items) == ["imgs/a/x", "x", "y"]
    assert items[0].path.resolve() == tmp_path / "imgs/a/x.png"
    (lists / "val.txt").write_text("../imgs/b/y.png\n")  # outside the list's folder: its name
    assert [(i.rel, i.path.resolve()) for i in find_images(["@lists/val.txt"])] == [("y", tmp_path / "imgs/b/y.png")]


def test_the_same_file_twice_is_read_once(tmp_path, monkeypatch):
    _images(tmp_path, "imgs/a.png")
    monkeypatch.chdir(tmp_path)
    assert _rels(find_images(["imgs", "imgs/a.png", str(tmp_path / "imgs" / "a.png")])) == ["a"]


def test_clashes_are_named_before_any_work(tmp_path, monkeypatch):
    _images(tmp_path, "one/x.png", "two/x.jpg", "n/a.png", "n/a/b.png", "r/run.json.png", "c/A.png", "c/a.jpg")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ImageListError, match=r"one/x.png and two/x.jpg would both write to the output folder x/"):
        find_images(["one/x.png", "two/x.jpg"])
    with pytest.raises(ImageListError, match=r"n/a/b.png would write inside a/, the output folder of n/a.png"):
        find_images(["n"], recursive=True)
    assert _rels(find_images(["n"])) == ["a"]  # without --recursive, no clash
    with pytest.raises(ImageListError, match="the name of a run-level file"):
        find_images(["r"])
    with pytest.raises(ImageListError, match="both write") as info:  # some file systems do not tell A from a
        find_images(["c"])
    assert "--recursive" not in str(info.value)  # one folder: no parent folder to give instead


def test_missing_and_empty_inputs_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        find_images(["nope.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageListError, match="no images found in empty"):
        find_images(["empty"])
    with pytest.raises(ImageListError, match="no images found"):
        find_images(["empty/*.png"])
    with pytest.raises(FileNotFoundError, match="list file not found"):
        find_images(["@missing.txt"])
    _images(tmp_path, "deep/sub/a.png")
    with pytest.raises(ImageListError, match=r"no images found in deep .*it has subfolders: pass --recursive"):
        find_images(["deep"])


def test_a_run_folder_inside_the_input_folder_is_not_read(tmp_path, monkeypatch):
    _images(tmp_path / "imgs", "a.png", "out/a/overlay.png", "out/a/label.png")
    monkeypatch.chdir(tmp_path)
    assert _rels(find_images(["imgs"], recursive=True, out=Path("imgs/out"))) == ["a"]
    with pytest.raises(ImageListError, match="the run's own outputs"):
        find_images(["imgs/out/a/label.png"], out=tmp_path / "imgs" / "out")


def test_a_list_file_with_a_bom_and_crlf_line_ends(tmp_path, monkeypatch):
    _images(tmp_path, "imgs/img0.png", "imgs/img1.png")
    (tmp_path / "list.txt").write_bytes("\ufeffimgs/img0.png\r\nimgs/img1.png\r\n".encode())
    monkeypatch.chdir(tmp_path)
    assert [item.rel for item in find_images(["@list.txt"])] == ["imgs/img0", "imgs/img1"]
