"""`lasagna data check`: a clean tree passes with a summary; every planted error is reported by its file."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from lasagna.cli import main
from user_data import LAYOUT, write_coco_file, write_folder_tree, write_jsonl_file


def _check(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["data", "check", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_clean_folder_tree_passes_with_a_summary(tmp_path, capsys):
    write_folder_tree(tmp_path)
    code, out, err = _check(capsys, "--dataset", "folder", "--root", str(tmp_path))
    assert code == 0, out
    assert f"{len(LAYOUT)} photos checked" in out and "classes: 3" in out
    assert "kiwi" in out and "%" in out and "ignore pixels:" in out
    assert "example conversations" in out and "<ins>" in out and out.rstrip().endswith("OK")
    assert "check folder" in err  # the progress bar


def test_planted_folder_errors_are_each_named_by_file(tmp_path, capsys):
    write_folder_tree(tmp_path, layout=[[0], [1], [2], [0, 1], [1, 2], [0, 2]])
    labels, images = tmp_path / "labels", tmp_path / "images"
    (labels / "photo0.png").unlink()  # a photo without its label
    (images / "photo1.png").write_bytes(b"not a png at all")  # an unreadable photo
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(labels / "photo2.png")  # the wrong size
    bad_ids = np.asarray(Image.open(labels / "photo3.png")).copy()
    bad_ids[0, 0] = 7
    Image.fromarray(bad_ids).save(labels / "photo3.png")  # an id beyond the 3 classes
    Image.fromarray(np.full((48, 64), 255, np.uint8)).save(labels / "photo4.png")  # nothing labelled: a warning
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(labels / "stray.png")  # no photo: a warning
    (tmp_path / "classes.txt").write_text("kiwi\nplum\nkiwi <no_ins>\n")
    code, out, _ = _check(capsys, "--dataset", "folder", "--root", str(tmp_path))
    assert code == 1 and "FAILED" in out
    errors = out[out.index("errors:") : out.index("warnings:")]
    assert f"{labels / 'photo0.png'}: missing" in errors
    assert f"{images / 'photo1.png'}: cannot be read" in errors
    assert f"{labels / 'photo2.png'}: size 10x10 differs from the photo's 64x48" in errors
    assert f"{labels / 'photo3.png'}" in errors and "[7]" in errors
    assert "reserved token" in errors and str(tmp_path / "classes.txt") in errors
    warnings = out[out.index("warnings:") :]
    assert f"{labels / 'photo4.png'}: no labelled pixel" in warnings and "stray.png" in warnings
    assert "training would answer every class absent" in warnings  # not "nothing to learn": it teaches <no_ins>


def test_coco_file_errors(tmp_path, capsys):
    path = write_coco_file(tmp_path)
    data = json.loads(path.read_text())
    data["images"][0]["file_name"] = "missing.jpg"
    data["images"][1]["height"] = 40  # the photo is 48 high: the painted label has another size
    data["annotations"][-1]["category_id"] = 99
    path.write_text(json.dumps(data))
    code, out, _ = _check(capsys, "--dataset", "coco", "--root", str(tmp_path))
    assert code == 1
    assert f"{tmp_path / 'images' / 'missing.jpg'}: missing" in out
    assert f"{tmp_path / 'images' / 'photo1.jpg'}: size 64x40 differs from the photo's 64x48" in out
    assert f"{path}: annotation of image 103 has unknown category ids [99]" in out
    code, out, _ = _check(capsys, "--dataset", "coco-referring", "--root", str(path), "--examples", "0")
    assert code == 1 and "expressions:" in out


def test_jsonl_errors(tmp_path, capsys):
    path = write_jsonl_file(tmp_path)
    rle = mask_utils.encode(np.asfortranarray(np.ones((5, 5), np.uint8)))
    extra = [
        "[1, 2]",
        json.dumps({"image": "pics/photo0.png", "text": "the <ins> thing", "masks": []}),
        json.dumps({"image": "pics/photo2.png", "text": "small", "masks": [{**rle, "counts": rle["counts"].decode()}]}),
        json.dumps({"image": "pics/lost.png", "text": "the kiwi"}),
    ]
    path.write_text(path.read_text() + "\n".join(extra) + "\n")
    code, out, _ = _check(capsys, "--dataset", "jsonl", "--root", str(tmp_path), "--examples", "1")
    assert code == 1
    assert f"{path}: line 12: expected a JSON object" in out
    assert f"{tmp_path / 'pics' / 'photo0.png'}: expression 'the <ins> thing' holds reserved token" in out
    assert f"{tmp_path / 'pics' / 'photo2.png'}: cannot be read: an RLE mask of size 5x5" in out
    assert f"{tmp_path / 'pics' / 'lost.png'}: missing" in out
    assert "expressions: 13 (5 without a target)" in out


def test_an_unreadable_tree_is_one_error(tmp_path, capsys):
    code, out, _ = _check(capsys, "--dataset", "ade20k", "--root", str(tmp_path), "--layout", "lisa")
    assert code == 1 and str(tmp_path / "ade20k" / "annotations" / "training") in out


def test_a_dataset_name_or_option_no_reader_takes_is_a_usage_error(tmp_path, capsys):
    code, out, err = _check(capsys, "--dataset", "ade2k", "--root", str(tmp_path))
    assert code == 2 and out == "" and "unknown dataset 'ade2k'; known datasets: ade20k" in err
    code, out, err = _check(capsys, "--dataset", "folder", "--root", str(tmp_path), "--option", "colour=red")
    assert code == 2 and out == "" and "colour" in err


def test_an_expression_whose_targets_cover_no_pixel_is_an_error(tmp_path, capsys):
    path = write_jsonl_file(tmp_path)
    empty = mask_utils.encode(np.asfortranarray(np.zeros((48, 64), np.uint8)))
    line = {"image": "pics/photo0.png", "text": "the ghost", "masks": [{**empty, "counts": empty["counts"].decode()}]}
    path.write_text(path.read_text() + json.dumps(line) + "\n")
    code, out, _ = _check(capsys, "--dataset", "jsonl", "--root", str(tmp_path), "--examples", "0")
    assert code == 1
    assert f"{tmp_path / 'pics' / 'photo0.png'}: expression 'the ghost': its 1 target(s) cover no pixel" in out


def test_a_photo_turned_by_its_exif_tag_is_a_warning(tmp_path, capsys):
    write_folder_tree(tmp_path)
    photo = tmp_path / "images" / "photo0.png"
    exif = Image.Exif()
    exif[0x0112] = 3  # viewers turn it 180 degrees: a label drawn on what they show is upside down here
    Image.open(photo).save(tmp_path / "images" / "photo0.jpg", exif=exif, quality=95)
    photo.unlink()
    code, out, _ = _check(capsys, "--dataset", "folder", "--root", str(tmp_path), "--examples", "0")
    assert code == 0
    warnings = out[out.index("warnings:") :]
    assert f"{tmp_path / 'images' / 'photo0.jpg'}: EXIF orientation 3" in warnings and "as stored" in warnings


def test_an_expression_holding_a_reserved_string_in_any_case_is_an_error(tmp_path, capsys):
    path = write_jsonl_file(tmp_path)
    lines = [json.dumps({"image": "pics/photo0.png", "text": text, "masks": []}) for text in ("the <INS>", "a </s> b")]
    path.write_text(path.read_text() + "\n".join(lines) + "\n")
    code, out, _ = _check(capsys, "--dataset", "jsonl", "--root", str(tmp_path), "--examples", "0")
    assert code == 1
    assert "expression 'the <INS>' holds reserved token strings ['<ins>']" in out
    assert "expression 'a </s> b' holds reserved token strings ['</s>']" in out
