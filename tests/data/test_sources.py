"""Dataset readers on tiny trees written in each dataset's real on-disk format."""

from __future__ import annotations

import json
import pickle
import random
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from lasagna.data.records import IGNORE_LABEL
from lasagna.data.sources import SOURCES, open_source
from lasagna.data.sources.classnames import COCO_STUFF_171, PASCAL_CONTEXT_59, PASCAL_CONTEXT_459
from lasagna.data.sources.imageio import read_image_size, read_label
from lasagna.data.sources.refer import load_plain_pickle
from lasagna.data.tasks import format_record
from lasagna.preprocess import ImageReadError, to_rgb

# pycocotools' compiled decode trips numpy 2's `copy=` deprecation; harmless, and not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W = 6, 8


def _write(path: Path, array: np.ndarray, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save)
    return path


def _photo(path: Path, h: int = H, w: int = W) -> Path:
    return _write(path, np.full((h, w, 3), 120, np.uint8))


def _label(values: list[int], dtype=np.uint8) -> np.ndarray:
    """An (H, W) label whose first len(values) pixels of row 0 hold `values`, the rest the first value."""
    label = np.full((H, W), values[0], dtype)
    label[0, : len(values)] = values
    return label


# ---------------------------------------------------------------- image io


def test_read_image_converts_every_mode_to_rgb(tmp_path):
    gray = _write(tmp_path / "g.png", np.full((H, W), 7, np.uint8))
    rgba = _write(tmp_path / "a.png", np.full((H, W, 4), (1, 2, 3, 0), np.uint8))
    deep = _write(tmp_path / "d.png", np.full((H, W), 65535, np.uint16))
    palette = Image.fromarray(np.ones((H, W), np.uint8), mode="L").convert("P")
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.save(tmp_path / "p.png")
    for path, pixel in [
        (gray, (7, 7, 7)),
        (rgba, (1, 2, 3)),
        (deep, (255, 255, 255)),
        (tmp_path / "p.png", (10, 20, 30)),
    ]:
        image = to_rgb(path)
        assert image.shape == (H, W, 3) and image.dtype == np.uint8
        assert tuple(image[0, 0]) == pixel, path


def test_read_image_applies_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: stored (6, 8) is shown (8, 6)
    path = _write(tmp_path / "rot.jpg", np.zeros((H, W, 3), np.uint8), exif=exif.tobytes())
    assert to_rgb(path).shape == (W, H, 3)
    assert read_image_size(path) == (W, H)
    assert to_rgb(path, exif_transpose=False).shape == (H, W, 3)
    assert read_image_size(path, exif_transpose=False) == (H, W)


def test_read_image_errors_name_the_file(tmp_path):
    good = _photo(tmp_path / "ok.jpg")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ImageReadError, match=r"broken\.jpg"):
        to_rgb(broken)
    with pytest.raises(FileNotFoundError, match=r"absent\.png"):
        to_rgb(tmp_path / "absent.png")
    rgb = _photo(tmp_path / "rgb_label.png")
    with pytest.raises(ImageReadError, match="single-channel"):
        read_label(rgb)


def test_read_label_keeps_palette_indices(tmp_path):
    palette = Image.fromarray(_label([0, 3, 255]), mode="L").convert("P")
    palette.putpalette(list(range(256)) * 3)
    palette.save(tmp_path / "voc.png")
    assert read_label(tmp_path / "voc.png")[0, :3].tolist() == [0, 3, 255]


def test_read_label_refuses_jpeg_files_whatever_their_name(tmp_path):
    # two classes 0 and 1 side by side: JPEG's blur makes values in between, which could pass as real class ids
    values = np.zeros((16, 16), np.uint8)
    values[:, 8:] = 1
    for name in ("label.jpg", "label.png"):
        Image.fromarray(values).save(tmp_path / name, format="JPEG", quality=75)
        with pytest.raises(ImageReadError, match=rf"{name}: a JPEG file.*lossy.*PNG"):
            read_label(tmp_path / name)


# ---------------------------------------------------------------- semantic datasets


def _ade_tree(root: Path) -> None:
    base = root / "ADEChallengeData2016"
    for name, values in [("ADE_train_00000001", [0, 1, 150]), ("ADE_train_00000002", [5])]:
        _photo(base / "images" / "training" / f"{name}.jpg")
        _write(base / "annotations" / "training" / f"{name}.png", _label(values))


def test_ade20k_maps_void_to_ignore_and_shifts_classes(tmp_path):
    _ade_tree(tmp_path)
    source = open_source("ade20k", tmp_path, "train")
    assert len(source) == 2 and source.task == "semantic"
    record = source[0]
    assert record.image_id == "ADE_train_00000001"
    assert len(record.classes) == 150 and record.classes[0] == "wall" and record.classes[149] == "flag"
    label = record.load_label()
    assert label.dtype == np.int64 and label.shape == (H, W)
    assert label[0, :3].tolist() == [IGNORE_LABEL, 0, 149]
    assert record.load_image().shape == (H, W, 3)
    assert np.unique(source[1].load_label()).tolist() == [4]


def test_root_from_environment_and_missing_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("LASAGNA_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match=r"LASAGNA_DATA(.|\n)*ADEChallengeData2016/images"):
        open_source("ade20k")
    _ade_tree(tmp_path)
    monkeypatch.setenv("LASAGNA_DATA", str(tmp_path))
    assert len(open_source("ade20k")) == 2
    (tmp_path / "ADEChallengeData2016" / "images" / "training" / "ADE_train_00000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"ADE_train_00000002.jpg(.|\n)*Expected layout"):
        open_source("ade20k")
    with pytest.raises(FileNotFoundError, match=r"annotations/validation(.|\n)*Expected layout"):
        open_source("ade20k", split="val")
    with pytest.raises(ValueError, match="known splits: train, val"):
        open_source("ade20k", split="test")


def test_cocostuff_contiguous_ids_and_unused_ids_ignored(tmp_path):
    coco = tmp_path / "coco"
    raw = [0, 11, 12, 91, 181, 255]  # person, unused, stop sign, banner (first stuff), wood, void
    _photo(coco / "val2017" / "000000000139.jpg")
    _write(coco / "stuffthingmaps_trainval2017" / "val2017" / "000000000139.png", _label(raw))
    _photo(coco / "val2017" / "000000000285.jpg")
    _write(coco / "stuffthingmaps_trainval2017" / "val2017" / "000000000285.png", _label([200]))
    source = open_source("cocostuff", tmp_path, "val")
    record = source[0]
    assert record.classes == COCO_STUFF_171 and len(record.classes) == 171
    ids = record.load_label()[0, :6].tolist()
    assert ids == [0, IGNORE_LABEL, 11, 80, 170, IGNORE_LABEL]
    assert [record.classes[i] for i in (0, 11, 80, 170)] == ["person", "stop sign", "banner", "wood"]
    assert {"wall", "wall-brick", "desk", "door", "playingfield"} <= set(record.classes)
    with pytest.raises(ValueError, match=r"000000000285.png has raw ids \[200\]"):
        source[1].load_label()


def test_cityscapes_void_ids_are_ignored(tmp_path):
    base = tmp_path / "cityscapes"
    for city, stem in [("aachen", "aachen_000000_000019"), ("bremen", "bremen_000001_000019")]:
        _photo(base / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png")
        _write(base / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png", _label([7, 33, 0, 9, 26]))
    source = open_source("cityscapes", tmp_path, "train")
    assert [source[i].image_id for i in range(2)] == ["aachen_000000_000019", "bremen_000001_000019"]
    assert len(source[0].classes) == 19
    assert source[0].load_label()[0, :5].tolist() == [0, 18, IGNORE_LABEL, IGNORE_LABEL, 13]


def test_mapillary_names_from_config_or_builtin(tmp_path):
    base = tmp_path / "mapillary_vistas" / "validation"
    _photo(base / "images" / "a.jpg")
    _write(base / "labels" / "a.png", _label([0, 64, 65]))
    source = open_source("mapillary", tmp_path, "val")
    assert source[0].classes[0] == "bird" and source[0].classes[-1] == "ego vehicle" and len(source.classes) == 65
    assert source[0].load_label()[0, :3].tolist() == [0, 64, IGNORE_LABEL]
    labels = [{"readable": f"Class {i}"} for i in range(65)] + [{"readable": "Unlabeled"}]
    (tmp_path / "mapillary_vistas" / "config.json").write_text(json.dumps({"labels": labels}))
    assert open_source("mapillary", tmp_path, "val").classes[64] == "class 64"


def test_pascal_voc_20_ignores_background_and_border(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2012"
    for name in ["2007_000033", "2007_000042"]:
        _photo(base / "JPEGImages" / f"{name}.jpg")
        palette = Image.fromarray(_label([0, 1, 20, 255]), mode="L").convert("P")
        (base / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        palette.save(base / "SegmentationClass" / f"{name}.png")
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n2007_000042\n")
    source = open_source("pascal-voc-20", tmp_path)
    assert len(source) == 2 and source.classes[10] == "dining table" and len(source.classes) == 20
    assert source[1].load_label()[0, :4].tolist() == [IGNORE_LABEL, 0, 19, IGNORE_LABEL]


def test_pascal_context_59_and_459(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2010"
    for name in ["2008_000002", "2008_000003"]:
        _photo(base / "JPEGImages" / f"{name}.jpg")
        _write(base / "annotations_detectron2" / "pc59_val" / f"{name}.png", _label([0, 58, 255]))
        _write(base / "annotations_detectron2" / "pc459_val" / f"{name}.tif", _label([0, 458, 65535], np.uint16))
    _photo(base / "JPEGImages" / "2008_000999.jpg")  # a training image without a val label is not listed
    pc59 = open_source("pascal-context-59", tmp_path)
    pc459 = open_source("pascal-context-459", tmp_path, "val")
    assert len(pc59) == 2 and len(pc459) == 2
    assert pc59.classes == PASCAL_CONTEXT_59 and pc459.classes == PASCAL_CONTEXT_459
    assert set(pc59.classes) <= set(pc459.classes) and "potted plant" in pc59.classes
    assert pc59[0].load_label()[0, :3].tolist() == [0, 58, IGNORE_LABEL]
    assert pc459[0].load_label()[0, :3].tolist() == [0, 458, IGNORE_LABEL]
    with pytest.raises(ValueError, match="known splits: val"):
        open_source("pascal-context-59", tmp_path, "train")


def test_pascal_context_459_class_255_is_a_class_not_ignore(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2010"
    _photo(base / "JPEGImages" / "2008_000002.jpg")
    raw = _label([0, 254, 255, 256, 458, 65535, 65535], np.uint16)
    _write(base / "annotations_detectron2" / "pc459_val" / "2008_000002.tif", raw)
    assert read_label(base / "annotations_detectron2" / "pc459_val" / "2008_000002.tif").dtype == np.uint16
    record = open_source("pascal-context-459", tmp_path)[0]
    label = record.load_label()
    assert label.dtype == np.int64
    assert label[0, :7].tolist() == [0, 254, 255, 256, 458, IGNORE_LABEL, IGNORE_LABEL]
    assert not 0 <= IGNORE_LABEL < len(PASCAL_CONTEXT_459)  # the ignore value can be no class id
    assert (label == 255).sum() == 1 and (label == IGNORE_LABEL).sum() == 2

    # through the semantic task formatter: class 255 is a present class with its pixel, only 65535 is ignore
    sample = format_record(record, random.Random(0))
    name_255 = PASCAL_CONTEXT_459[255]
    assert name_255 in sample.meta.classes_present
    assert set(sample.meta.classes_present) == {PASCAL_CONTEXT_459[i] for i in (0, 254, 255, 256, 458)}
    np.testing.assert_array_equal(sample.ignore, raw == 65535)
    (conv,) = sample.conversations
    mask_255 = conv.masks[sample.meta.classes_present.index(name_255)]
    np.testing.assert_array_equal(mask_255, raw == 255)


# ---------------------------------------------------------------- referring


def _square(x0: int, y0: int, x1: int, y1: int) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _instances(path: Path, images: list[dict], anns: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": []}))


def _coco_images(root: Path) -> list[dict]:
    images = []
    for image_id in (1, 2):
        name = f"COCO_train2014_{image_id:012d}.jpg"
        _photo(root / "coco" / "train2014" / name)
        images.append({"id": image_id, "file_name": name, "height": H, "width": W})
    return images


def _refcoco_tree(root: Path) -> None:
    rle = mask_utils.encode(np.asfortranarray(np.pad(np.ones((2, 2), np.uint8), ((4, 0), (6, 0)))))
    anns = [
        {"id": 10, "image_id": 1, "segmentation": _square(0, 0, 4, 3)},
        {"id": 11, "image_id": 1, "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}},
        {"id": 20, "image_id": 2, "segmentation": []},
    ]
    _instances(root / "refer" / "refcoco" / "instances.json", _coco_images(root), anns)
    refs = [
        {
            "ref_id": 0,
            "image_id": 1,
            "ann_id": 10,
            "split": "train",
            "sentences": [{"sent": "left box"}, {"sent": "top"}],
        },
        {"ref_id": 1, "image_id": 1, "ann_id": 11, "split": "train", "sentences": [{"raw": "Corner"}]},
        {"ref_id": 2, "image_id": 2, "ann_id": 20, "split": "train", "sentences": [{"sent": "empty"}]},
        {"ref_id": 3, "image_id": 2, "ann_id": 20, "split": "testA", "sentences": [{"sent": "elsewhere"}]},
    ]
    (root / "refer" / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))


def test_refcoco_groups_expressions_per_image_and_decodes_masks(tmp_path):
    _refcoco_tree(tmp_path)
    source = open_source("refcoco", tmp_path, "train")
    assert len(source) == 2 and source.task == "referring"
    first = source[0]
    assert [e.text for e in first.expressions] == ["left box", "top", "Corner"]
    polygon = first.expressions[0].load_masks()
    assert polygon.shape == (1, H, W) and polygon.dtype == bool
    assert polygon[0, :3, :4].all() and polygon.sum() == 12
    corner = first.expressions[2].load_masks()
    assert corner[0, 4:, 6:].all() and corner.sum() == 4
    assert source[1].expressions[0].load_masks().shape == (1, H, W) and not source[1].expressions[0].load_masks().any()
    assert first.load_image().shape == (H, W, 3)
    assert len(open_source("refcoco", tmp_path, "testA")) == 1
    with pytest.raises(ValueError, match="testA, train"):
        open_source("refcoco", tmp_path, "val")
    with pytest.raises(FileNotFoundError, match=r"refs\(umd\)\.p(.|\n)*Expected layout"):
        open_source("refcocog", tmp_path)


def test_refclef_reads_saiapr_images(tmp_path):
    name = "25/images/25608.jpg"
    _photo(tmp_path / "refer" / "images" / "saiapr_tc-12" / name)
    image = {"id": 25608, "file_name": name, "height": H, "width": W}
    _instances(
        tmp_path / "refer" / "refclef" / "instances.json", [image], [{"id": 1, "segmentation": _square(1, 1, 3, 3)}]
    )
    refs = [{"image_id": 25608, "ann_id": 1, "split": "val", "sentences": [{"sent": "sky"}]}]
    (tmp_path / "refer" / "refclef" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    record = open_source("refclef", tmp_path, "val")[0]
    assert record.image_id == "25608" and record.expressions[0].load_masks().sum() == 4


def test_restricted_unpickler_refuses_other_classes(tmp_path):
    plain = tmp_path / "plain.p"
    plain.write_bytes(pickle.dumps([{"a": (1, 2.0, "x", True, None)}], protocol=2))
    assert load_plain_pickle(plain) == [{"a": (1, 2.0, "x", True, None)}]
    ordered = tmp_path / "ordered.p"
    ordered.write_bytes(pickle.dumps(OrderedDict(a=1), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"collections\.OrderedDict"):
        load_plain_pickle(ordered)
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.p"  # GLOBAL os.system, then call it: a plain pickle.load would run the command
    evil.write_bytes(b"cos\nsystem\n(V touch " + str(marker).encode() + b"\ntR.")
    with pytest.raises(pickle.UnpicklingError, match=r"os\.system"):
        load_plain_pickle(evil)
    assert not marker.exists()


def test_grefcoco_multi_target_and_no_target(tmp_path):
    anns = [
        {"id": 10, "image_id": 1, "segmentation": _square(0, 0, 2, 2)},
        {"id": 11, "image_id": 1, "segmentation": _square(4, 2, 6, 4)},
    ]
    _instances(tmp_path / "grefcoco" / "instances.json", _coco_images(tmp_path), anns)
    refs = [
        {"image_id": 1, "ann_id": [10, 11], "split": "val", "no_target": False, "sentences": [{"sent": "both"}]},
        {"image_id": 1, "ann_id": [-1], "split": "val", "no_target": True, "sentences": [{"sent": "a dog"}]},
        {"image_id": 2, "ann_id": [-1], "split": "val", "sentences": [{"sent": "nothing"}]},
    ]
    (tmp_path / "grefcoco" / "grefs(unc).json").write_text(json.dumps(refs))
    source = open_source("grefcoco", tmp_path, "val")
    assert len(source) == 2
    both, none = source[0].expressions
    masks = both.load_masks()
    assert masks.shape == (2, H, W) and masks[0, :2, :2].all() and masks[1, 2:4, 4:6].all() and masks.sum() == 8
    assert none.load_masks().shape == (0, H, W)
    assert source[1].expressions[0].load_masks().shape == (0, H, W)


# ---------------------------------------------------------------- reasoning and VQA


def _reason_tree(root: Path) -> Path:
    folder = root / "reason_seg" / "ReasonSeg" / "train"
    _photo(folder / "100.jpg", 10, 10)
    shapes = [
        {"label": "target", "points": [[3, 3], [4, 3], [4, 4], [3, 4]]},  # small target inside the ignore region
        {"label": "ignore", "points": [[0, 0], [9.7, 0], [9.7, 5], [0, 5]]},
        {"label": "flag", "points": [[0, 9], [9, 9]]},
        {"label": "target", "points": [[0, 7], [9, 7], [9, 9], [0, 9]]},
        {"label": "Ignore_2", "points": [[1, 8], [2, 8]]},  # a thin ignore line inside the big target
    ]
    annotation = {"text": ["what keeps the food cold?"], "is_sentence": True, "shapes": shapes}
    (folder / "100.json").write_text(json.dumps(annotation))
    _photo(folder / "200.jpg", 4, 4)
    (folder / "200.json").write_text(json.dumps({"text": "the cup", "is_sentence": False, "shapes": []}))
    explanatory = root / "reason_seg" / "ReasonSeg" / "explanatory" / "train.json"
    explanatory.parent.mkdir()
    explanatory.write_text(json.dumps([{"image": "100.jpg", "query": "q", "outputs": "The fridge keeps food cold."}]))
    return folder


def test_reasonseg_paints_largest_first_with_ignore(tmp_path):
    _reason_tree(tmp_path)
    source = open_source("reasonseg", tmp_path, "train")
    assert len(source) == 2 and source.task == "reasoning"
    record = source[0]
    assert record.queries == ("what keeps the food cold?",) and record.is_sentence
    assert record.explanation == "The fridge keeps food cold."
    mask = record.load_mask()
    assert mask.shape == (10, 10) and mask.dtype == np.int64
    assert set(np.unique(mask).tolist()) == {IGNORE_LABEL, 0, 1}  # the canvas's 255 never leaks out
    assert (mask[3:5, 3:5] == 1).all()  # painted after the larger ignore region
    assert mask[0, 0] == IGNORE_LABEL and mask[5, 9] == IGNORE_LABEL  # 9.7 truncates to 9, outline included
    assert mask[6].sum() == 0  # the "flag" shape is dropped
    assert (mask[7:10, 0] == 1).all() and mask[8, 1] == IGNORE_LABEL and mask[8, 2] == IGNORE_LABEL
    other = source[1]
    assert other.queries == ("the cup",) and not other.is_sentence and other.explanation is None
    assert other.load_mask().shape == (4, 4) and not other.load_mask().any()


def test_reasonseg_is_evaluated_on_each_image_first_query(tmp_path):
    from lasagna.eval.evaluate import evaluate_model
    from lasagna.infer.prediction import Prediction

    _reason_tree(tmp_path)
    asked = []

    class Nothing:  # answers every query without a mask
        def segment(self, image, query):
            asked.append(query)
            return Prediction(image.shape[:2])

    report = evaluate_model(Nothing(), "reasonseg", "train", root=str(tmp_path), progress=False)
    assert asked == ["what keeps the food cold? Please output segmentation mask.", asked[1]]
    assert asked[1].startswith("What is the cup in this image?")
    # the second image has no target: an empty answer is right there (IoU 1), wrong on the first (IoU 0)
    assert report["reasoning"] == {"images": 2, "cIoU": 0.0, "gIoU": 0.5, "num_samples": 2}


def test_reasonseg_missing_annotation_is_reported(tmp_path):
    folder = _reason_tree(tmp_path)
    (folder / "200.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"200.json(.|\n)*reason_seg/ReasonSeg"):
        open_source("reasonseg", tmp_path)


def test_llava_instruct_turns_without_image_placeholder(tmp_path):
    _photo(tmp_path / "coco" / "train2017" / "000000033471.jpg")
    entries = [
        {
            "id": "000000033471",
            "image": "000000033471.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat color is the bus?"},
                {"from": "gpt", "value": "White and red."},
                {"from": "human", "value": "Where is it?\n<image>"},
                {"from": "gpt", "value": "On a street."},
            ],
        }
    ]
    path = tmp_path / "llava_dataset" / "llava_instruct_150k.json"
    path.parent.mkdir()
    path.write_text(json.dumps(entries))
    source = open_source("llava-instruct", tmp_path)
    record = source[0]
    assert source.task == "vqa" and record.image_id == "000000033471"
    assert record.turns == (("What color is the bus?", "White and red."), ("Where is it?", "On a street."))
    entries[0]["conversations"] = entries[0]["conversations"][1:3]
    path.write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=r"entry #0.*alternate"):
        open_source("llava-instruct", tmp_path)


# ---------------------------------------------------------------- registry


def test_registry_names_and_unknown_name():
    assert set(SOURCES) == {
        "ade20k", "cocostuff", "cityscapes", "mapillary", "pascal-context-59", "pascal-context-459",
        "pascal-voc-20", "refcoco", "refcoco+", "refcocog", "refclef", "grefcoco", "reasonseg", "llava-instruct",
        "folder", "coco", "coco-referring", "jsonl",
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"known datasets: .*ade20k.*refcoco\+"):
        open_source("ade21k")


def test_records_pickle_for_dataloader_workers(tmp_path):
    _ade_tree(tmp_path)
    _refcoco_tree(tmp_path)
    _reason_tree(tmp_path)
    for name in ("ade20k", "refcoco", "reasonseg"):
        record = open_source(name, tmp_path)[0]
        restored = pickle.loads(pickle.dumps(record))
        assert restored.image_id == record.image_id
        assert np.array_equal(restored.load_image(), record.load_image())
