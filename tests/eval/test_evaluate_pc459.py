"""PASCAL-Context 459 is evaluable: its class 255 is scored as a class, 65535 pixels are left out."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from lasagna.data.sources.classnames import PASCAL_CONTEXT_459
from lasagna.eval.evaluate import evaluate_model
from lasagna.infer.prediction import ClassResult, Prediction

IGNORE_16 = 65535


class _Oracle:
    """Answers a class list with the label map it was given, shifted by `offset` class ids (0: perfect)."""

    def __init__(self, truth: np.ndarray, offset: int = 0):
        self.truth, self.offset = truth, offset

    def segment(self, image, classes, chunk_size=16, decoder=None):
        ids = [int(i) for i in np.unique(self.truth) if i != IGNORE_16]
        masks = [self.truth == i for i in ids]
        names = {PASCAL_CONTEXT_459[i + self.offset]: m for i, m in zip(ids, masks, strict=True)}
        results = [ClassResult(c, c in names, 1.0, names.get(c)) for c in classes]
        logits = torch.stack([torch.from_numpy(names[c.name]).float() * 20 - 10 for c in results if c.present])
        return Prediction(image_size=image.shape[:2], classes=results, logits=logits)


def test_class_255_is_scored_and_65535_is_ignored(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2010"
    (base / "JPEGImages").mkdir(parents=True)
    (base / "annotations_detectron2" / "pc459_val").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(base / "JPEGImages" / "2008_000001.jpg")
    truth = np.array([[0] * 6, [255] * 6, [458] * 6, [IGNORE_16] * 6], np.uint16)
    Image.fromarray(truth).save(base / "annotations_detectron2" / "pc459_val" / "2008_000001.png")  # 16-bit PNG

    report = evaluate_model(_Oracle(truth), "pascal-context-459", "val", root=str(tmp_path), progress=False)
    per_class = report["semantic"]["per_class_iou"]
    assert len(per_class) == 459 and report["semantic"]["mIoU"] == 1.0
    assert per_class[0] == per_class[255] == per_class[458] == 1.0
    assert sum(v is not None for v in per_class) == 3  # classes in neither truth nor answer have no IoU

    shifted = evaluate_model(_Oracle(truth, offset=-1), "pascal-context-459", "val", root=str(tmp_path))
    assert shifted["semantic"]["per_class_iou"][255] == 0.0  # the 255 pixels answered as class 254
