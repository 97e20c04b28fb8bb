"""The paper's datasets in the `dataset/` tree of the LISA and LaSagnA READMEs open as they are."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lasagna.data.sources import open_source
from lasagna.data.sources.classnames import ADE20K_150, COCO_STUFF_171


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _photo(path: Path) -> None:
    _save(path, np.full((6, 8, 3), 100, np.uint8))


def test_ade20k_and_cocostuff_in_the_lisa_tree(tmp_path):
    _photo(tmp_path / "ade20k" / "images" / "training" / "a1.jpg")
    _save(tmp_path / "ade20k" / "annotations" / "training" / "a1.png", np.full((6, 8), 3, np.uint8))
    _photo(tmp_path / "coco" / "train2017" / "000000000009.jpg")
    _save(tmp_path / "cocostuff" / "train2017" / "000000000009.png", np.full((6, 8), 0, np.uint8))
    ade = open_source("ade20k", tmp_path, "train")
    assert ade[0].load_label()[0, 0] == 2 and ade[0].classes == ADE20K_150
    stuff = open_source("cocostuff", tmp_path, "train", layout="lisa")
    assert stuff[0].load_image().shape == (6, 8, 3)
    assert stuff[0].classes[stuff[0].load_label()[0, 0]] == COCO_STUFF_171[0]
    # asking for the official tree names only its path
    with pytest.raises(FileNotFoundError) as err:
        open_source("ade20k", tmp_path, "train", layout="official")
    assert "ADEChallengeData2016" in str(err.value) and "'lisa')\n" not in str(err.value)


def test_missing_tree_names_every_path_tried(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        open_source("mapillary", tmp_path, "val")
    text = str(err.value)
    assert str(tmp_path / "mapillary_vistas" / "validation" / "labels") in text
    assert str(tmp_path / "mapillary" / "validation" / "v1.2" / "labels") in text
    with pytest.raises(ValueError, match="unknown layout 'detectron'"):
        open_source("ade20k", tmp_path, layout="detectron")
    with pytest.raises(ValueError, match=r"takes no option \['background'\]"):
        open_source("ade20k", tmp_path, background="sky")
    assert len(open_source("pascal-context-59", _pc59(tmp_path), layout="lisa")) == 1  # one tree: layout ignored


def _pc59(root: Path) -> Path:
    base = root / "VOCdevkit" / "VOC2010"
    _photo(base / "JPEGImages" / "2008_000002.jpg")
    _save(base / "annotations_detectron2" / "pc59_val" / "2008_000002.png", np.zeros((6, 8), np.uint8))
    return root


def test_refcoco_and_grefcoco_in_refer_seg(tmp_path):
    images = tmp_path / "refer_seg" / "images" / "mscoco" / "images" / "train2014"
    _photo(images / "COCO_train2014_000000000001.jpg")
    instances = {
        "images": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "height": 6, "width": 8}],
        "annotations": [{"id": 7, "image_id": 1, "segmentation": [[0, 0, 4, 0, 4, 3, 0, 3]]}],
        "categories": [],
    }
    for name in ("refcoco", "grefcoco"):
        (tmp_path / "refer_seg" / name).mkdir(parents=True)
        (tmp_path / "refer_seg" / name / "instances.json").write_text(json.dumps(instances))
    ref = {"ref_id": 0, "image_id": 1, "ann_id": 7, "split": "train", "sentences": [{"sent": "left box"}]}
    (tmp_path / "refer_seg" / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps([ref], protocol=2))
    gref = {**ref, "ann_id": [7], "sentences": [{"sent": "left box"}, {"sent": "none"}]}
    (tmp_path / "refer_seg" / "grefcoco" / "grefs(unc).json").write_text(json.dumps([gref]))
    for name in ("refcoco", "grefcoco"):
        record = open_source(name, tmp_path, "train")[0]
        assert record.expressions[0].text == "left box" and record.expressions[0].load_masks().sum() == 12
