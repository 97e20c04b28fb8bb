"""The folder format: images/, labels/, classes.txt, optionally per split; 8-bit and 16-bit label PNGs."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from lasagna.data.records import IGNORE_LABEL
from lasagna.data.sources import open_source
from lasagna.data.sources.folder import checked_folder
from user_data import CLASSES, LAYOUT, SIZE, scene, write_folder_tree


def test_folder_tree_opens_as_a_semantic_source(tmp_path):
    write_folder_tree(tmp_path)
    source = open_source("folder", tmp_path, "train")
    assert (source.name, source.task, len(source)) == ("folder", "semantic", len(LAYOUT))
    record = source[0]
    assert record.classes == tuple(CLASSES) and record.image_id == "photo0"
    image, label = record.load_image(), record.load_label()
    assert image.shape == (*SIZE, 3) and label.shape == SIZE and label.dtype == np.int64
    _, raw = scene(LAYOUT[0])
    assert np.array_equal(label, np.where(raw == 255, IGNORE_LABEL, raw.astype(np.int64)))
    assert open_source("folder", tmp_path, "val")[0].image_id == "photo0"  # one tree: any split name


def test_split_folders_and_a_shared_class_list(tmp_path):
    write_folder_tree(tmp_path / "train")
    write_folder_tree(tmp_path / "val", layout=[[2]])
    (tmp_path / "train" / "classes.txt").rename(tmp_path / "classes.txt")
    (tmp_path / "val" / "classes.txt").unlink()
    assert len(open_source("folder", tmp_path, "train")) == len(LAYOUT)
    assert len(open_source("folder", tmp_path, "val")) == 1


def test_more_than_255_classes_need_16_bit_labels(tmp_path):
    write_folder_tree(tmp_path)
    names = [f"thing {i}" for i in range(300)]
    (tmp_path / "classes.txt").write_text("\n".join(names))
    wide = np.array([[0, 255, 299, 65535]], np.uint16)
    Image.fromarray(wide).save(tmp_path / "labels" / "photo0.png")
    Image.fromarray(np.zeros((1, 4, 3), np.uint8)).save(tmp_path / "images" / "photo0.png")
    source = open_source("folder", tmp_path)
    assert source[0].load_label().tolist() == [[0, 255, 299, IGNORE_LABEL]]  # 255 is a class here
    with pytest.raises(ValueError, match=r"photo1\.png is 8-bit.*16-bit"):
        source[1].load_label()


def test_problems_are_named_by_file(tmp_path):
    write_folder_tree(tmp_path)
    (tmp_path / "labels" / "photo2.png").unlink()
    (tmp_path / "classes.txt").write_text("kiwi\nplum\nKiwi\n<ins>\n")
    with pytest.raises(ValueError) as err:
        open_source("folder", tmp_path)
    text = str(err.value)
    assert str(tmp_path / "labels" / "photo2.png") in text and "missing" in text
    assert "'Kiwi' repeats class 0" in text and "reserved token" in text and "lasagna data check" in text


def test_missing_class_list_is_a_file_not_found_error(tmp_path):
    write_folder_tree(tmp_path)
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"classes\.txt"):
        open_source("folder", tmp_path)


def test_label_maps_of_another_file_type_are_named(tmp_path):
    write_folder_tree(tmp_path)
    labels = tmp_path / "labels"
    (labels / "photo1.png").rename(labels / "photo1.PNG")  # an upper-case suffix is still a PNG
    Image.open(labels / "photo2.png").save(labels / "photo2.jpg", quality=95)
    (labels / "photo2.png").unlink()
    source, problems = checked_folder(tmp_path)
    assert [item.label.name for item in source.items] == ["photo0.png", "photo1.PNG", "photo3.png"]
    assert [str(p) for p in problems] == [
        f"{labels / 'photo2.png'}: missing: the label map of photo2.png (photo2.jpg is not a PNG: label maps must "
        "be PNGs, since JPEG's lossy compression changes ids at every edge)"
    ]


def test_names_that_differ_only_in_unicode_form_repeat_each_other(tmp_path):
    write_folder_tree(tmp_path)
    # "café" typed (one code point) and pasted from a macOS file name (e + combining accent) look the same
    (tmp_path / "classes.txt").write_text("caf\u00e9\ncafe\u0301\n\uff4b\uff49\uff57\uff49 fruit\nkiwi fruit\n")
    with pytest.raises(ValueError) as err:
        open_source("folder", tmp_path)
    assert "class 1 'cafe\u0301' repeats class 0 'caf\u00e9'" in str(err.value)
    assert "class 3 'kiwi fruit' repeats class 2" in str(err.value)


@pytest.mark.parametrize(("name", "token"), [("<INS>", "<ins>"), ("end </s>", "</s>"), ("<Pad>", "<pad>")])
def test_reserved_strings_in_any_case_and_the_tokenizers_own_are_named(tmp_path, name, token):
    """The training prompt lower-cases class names, and every tokenizer lasagna loads reads "</s>" as its end of
    sequence: either would put a special token where a class name belongs."""
    write_folder_tree(tmp_path)
    (tmp_path / "classes.txt").write_text(f"kiwi\n{name}\nquince\n")
    with pytest.raises(
        ValueError, match=re.escape(f"class 1 {name!r} contains the reserved token string(s) ['{token}']")
    ):
        open_source("folder", tmp_path)


def test_a_split_the_tree_lacks_names_the_splits_it_has(tmp_path):
    """`lasagna eval` reads split "test" unless told: a tree of train/ and val/ should say so, not only that
    DIR/images is missing."""
    write_folder_tree(tmp_path / "train")
    write_folder_tree(tmp_path / "val")
    with pytest.raises(FileNotFoundError, match=r"no split 'test' .*: its split folders are train, val \(--split\)"):
        open_source("folder", tmp_path, "test")
