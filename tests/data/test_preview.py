"""`lasagna data preview ade20k --root <tree>`: present classes are exactly the labels in the PNG."""

import json

import numpy as np
from PIL import Image

from lasagna.cli import main
from lasagna.data.sources.classnames import ADE20K_150


def _ade_tree(root, labels):
    base = root / "ADEChallengeData2016"
    for name, values in labels.items():
        (base / "images" / "training").mkdir(parents=True, exist_ok=True)
        (base / "annotations" / "training").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((12, 16, 3), 90, np.uint8)).save(base / "images" / "training" / f"{name}.jpg")
        label = np.zeros((12, 16), np.uint8)
        for i, v in enumerate(values):
            label[:, i * 3 : i * 3 + 3] = v
        Image.fromarray(label).save(base / "annotations" / "training" / f"{name}.png")


def test_preview_present_classes_are_the_png_labels(tmp_path, capsys):
    # raw ADE ids: 0 = ignore, k = class k - 1
    labels = {"ADE_train_00000001": [0, 1, 3, 150], "ADE_train_00000002": [13, 13, 7]}
    _ade_tree(tmp_path, labels)
    assert main(["data", "preview", "ade20k", "--root", str(tmp_path), "--n", "6", "--seed", "3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines
    for row in lines:
        raw = labels[row["image"]]
        want = {ADE20K_150[v - 1] for v in raw if v != 0}
        assert set(row["classes_present"]) == want
        assert row["num_masks"] == row["answer"].count("<ins>") == len(want)
        assert not set(row["classes_absent"]) & want
