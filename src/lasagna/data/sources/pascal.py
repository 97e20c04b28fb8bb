"""Evaluation-only PASCAL datasets: VOC 2012 (20 classes), PASCAL-Context 59 and 459 (validation split only).

The layouts are the ones open-vocabulary segmentation work uses (the detectron2 / Mask2Former-style
`annotations_detectron2` folders that the usual `prepare_pascal_context` scripts write from the Context .mat files;
VOC is read straight from the official tarball). Expected trees under the data root:

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png            palette PNG: 0 background, 1..20 classes, 255 border
    VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt        one <id> per line
    VOCdevkit/VOC2010/JPEGImages/<id>.jpg
    VOCdevkit/VOC2010/annotations_detectron2/pc59_val/<id>.png    uint8: 0..58 classes, 255 ignore
    VOCdevkit/VOC2010/annotations_detectron2/pc459_val/<id>.tif   uint16: 0..458 classes, 65535 ignore
                                                                   (or 16-bit <id>.png, the same values)

Label conventions: VOC-20 follows the usual 20-class protocol, background is not a class (raw 0 and 255 -> ignore,
raw k -> k - 1). Context ids are already contiguous; in Context-459, raw 255 is an ordinary class (class 255), only
65535 is void. Every file void value becomes IGNORE_LABEL in memory. The label files decide which images belong to a
Context split (JPEGImages also holds the training images).
"""

from __future__ import annotations

from pathlib import Path

from lasagna.data.sources import classnames
from lasagna.data.sources.base import LabeledImage, Layout, SemanticSource, build_lut

PASCAL_VOC = Layout(
    "pascal-voc-20",
    "  VOCdevkit/VOC2012/JPEGImages/<id>.jpg\n"
    "  VOCdevkit/VOC2012/SegmentationClass/<id>.png  (0 background, 1..20 classes, 255 border)\n"
    "  VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt  (one <id> per line)",
)
PASCAL_CONTEXT_59 = Layout(
    "pascal-context-59",
    "  VOCdevkit/VOC2010/JPEGImages/<id>.jpg\n"
    "  VOCdevkit/VOC2010/annotations_detectron2/pc59_val/<id>.png  (uint8, 0..58 classes, 255 ignore)",
)
PASCAL_CONTEXT_459 = Layout(
    "pascal-context-459",
    "  VOCdevkit/VOC2010/JPEGImages/<id>.jpg\n"
    "  VOCdevkit/VOC2010/annotations_detectron2/pc459_val/<id>.tif  (uint16, 0..458 classes, 65535 ignore;\n"
    "   16-bit <id>.png files are read the same way)",
)

_PC459_IGNORE = 65535


def pascal_voc_20(root: str | Path | None = None, split: str = "val") -> SemanticSource:
    """PASCAL VOC 2012 segmentation, 20 classes, background ignored; images listed by ImageSets/Segmentation."""
    split = PASCAL_VOC.split(split, ("train", "val"))
    base = PASCAL_VOC.root(root) / "VOCdevkit" / "VOC2012"
    split_file = PASCAL_VOC.require(base / "ImageSets" / "Segmentation" / f"{split}.txt")
    ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    items = [LabeledImage(i, base / "JPEGImages" / f"{i}.jpg", base / "SegmentationClass" / f"{i}.png") for i in ids]
    PASCAL_VOC.require_all((item.label for item in items), f"label files listed in {split_file}")
    PASCAL_VOC.require_all((item.image for item in items), f"images listed in {split_file}")
    lut = build_lut(256, range(1, 21), ignore_ids=[0, 255])
    return SemanticSource("pascal-voc-20", classnames.PASCAL_VOC_20, tuple(items), lut)


def _context(layout: Layout, root, split: str, folder: str, suffixes: tuple[str, ...], classes, lut) -> SemanticSource:
    """A Context split whose label files carry the first of `suffixes` that the folder holds."""
    layout.split(split, ("val",))
    base = layout.root(root) / "VOCdevkit" / "VOC2010"
    label_dir = layout.require(base / "annotations_detectron2" / folder)
    suffix = next((s for s in suffixes if any(label_dir.glob(f"*{s}"))), suffixes[0])
    labels = layout.files(label_dir, f"*{suffix}")
    items = [LabeledImage(p.stem, base / "JPEGImages" / f"{p.stem}.jpg", p) for p in labels]
    layout.require_all((item.image for item in items), "images for listed label files")
    return SemanticSource(layout.dataset, classes, tuple(items), lut, wide=len(classes) > 255)


def pascal_context_59(root: str | Path | None = None, split: str = "val") -> SemanticSource:
    """PASCAL-Context, the 59 frequent classes (uint8 labels 0..58, 255 ignore)."""
    lut = build_lut(256, range(59), ignore_ids=[255])
    return _context(PASCAL_CONTEXT_59, root, split, "pc59_val", (".png",), classnames.PASCAL_CONTEXT_59, lut)


def pascal_context_459(root: str | Path | None = None, split: str = "val") -> SemanticSource:
    """PASCAL-Context, all 459 classes (uint16 TIFF or 16-bit PNG labels 0..458, 65535 ignore).

    Raw 255 is a class (index 255), so the file's void value is 65535 and an 8-bit label file cannot hold the split.
    """
    lut = build_lut(_PC459_IGNORE + 1, range(459), ignore_ids=[_PC459_IGNORE])
    return _context(PASCAL_CONTEXT_459, root, split, "pc459_val", (".tif", ".png"), classnames.PASCAL_CONTEXT_459, lut)
