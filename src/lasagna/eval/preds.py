"""What `lasagna eval --save-preds DIR` writes: each evaluated image's answer, in the layout of `lasagna segment`.

    DIR/semantic/run.json                  task, dataset, split and, under "settings", what the answers depend on
                                           (model, decoder, chunk size, the class list), as `lasagna segment` keeps it
    DIR/semantic/<id>/result.json          the answer (per class: decision, score, RLE mask), `infer.outputs`
    DIR/semantic/<id>/label.png            the label map eval scored: class index per pixel, 255 unlabelled
                                           (16-bit with 65535 past 255 classes)
    DIR/semantic/<id>/overlay.png          only with --save-overlays
    DIR/semantic-gt/<id>.png               the GT eval scored against, same encoding (255 / 65535 ignore)
    DIR/referring/<id>/<k>/result.json     the answer to the image's k-th expression (its "query", RLE masks)
    DIR/reasoning/<id>/result.json         the answer to the image's query, as asked

`<id>` is the dataset's image id with an image suffix dropped (`shapeworld/val/0000003`, `ADE_val_00000001`), so
`lasagna metrics semseg --pred DIR/semantic --gt DIR/semantic-gt` scores the saved maps, class names from run.json,
and reproduces eval's mIoU. Each image folder and GT file appears whole (atomic writes). A rerun into the same DIR
replaces the task folders an earlier eval wrote (it removes them first, so no stale image is scored); a task folder
that eval did not write is never touched.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from ..atomic import write_atomic_file
from ..infer.outputs import LABEL_VOID, LABEL_VOID_16, label_png, write_image_outputs

WRITTEN_BY = "lasagna eval"
"""run.json's "written_by": marks a task folder as eval's, so a rerun may replace it."""
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


def image_rel(image_id: str) -> str:
    """The relative output path of an image id: its parts below any root, an image suffix dropped."""
    parts = [p for p in PurePosixPath(image_id.replace("\\", "/")).parts if p not in ("/", ".")]
    if not parts or ".." in parts or parts == ["run.json"]:
        raise ValueError(f"image id {image_id!r} cannot name an output folder")
    rel = PurePosixPath(*parts)
    if rel.suffix.lower() in IMAGE_SUFFIXES:
        rel = rel.with_suffix("")
    return rel.as_posix()


def void_value(num_classes: int) -> int:
    """The value of unlabelled / ignore pixels in label PNGs of `num_classes` classes."""
    return LABEL_VOID if num_classes <= LABEL_VOID else LABEL_VOID_16


class PredictionWriter:
    """Writes one task's answers under `root/<task>` (and its GT under `root/<task>-gt`). Every process of a
    sharded eval writes its own images; only the `main` one prepares the folder and writes run.json."""

    def __init__(
        self, root: Path, task: str, info: dict, settings: dict | None = None, overlays: bool = False, main: bool = True
    ) -> None:
        self.folder, self.gt_folder = Path(root) / task, Path(root) / f"{task}-gt"
        self.info = {"written_by": WRITTEN_BY, "task": task, **info, "settings": dict(settings or {})}
        self.overlays, self.main = overlays, main
        self._seen: dict[str, str] = {}

    def prepare(self) -> None:
        """Empty the task folders of an earlier eval (refusing folders eval did not write) and mark them as eval's."""
        ours = _written_by_eval(self.folder / "run.json")
        for folder in (self.folder, self.gt_folder):
            if folder.exists() and not folder.is_dir():
                raise NotADirectoryError(f"--save-preds: {folder} is a file, not a folder")
            if folder.is_dir() and any(folder.iterdir()) and not ours:
                raise FileExistsError(
                    f"--save-preds: {folder} holds files lasagna eval did not write; name a new or empty folder"
                )
        for folder in (self.folder, self.gt_folder):
            shutil.rmtree(folder, ignore_errors=True)
        self.write_run()

    def write_run(self, **settings) -> None:
        """(Re)write run.json with `settings` added to its settings (the main process only)."""
        self.info["settings"].update(settings)
        if self.main:
            text = json.dumps(self.info, indent=1) + "\n"
            write_atomic_file(self.folder / "run.json", lambda tmp: tmp.write_text(text))

    def _rel(self, image_id: str) -> str:
        rel = image_rel(image_id)
        if self._seen.setdefault(rel, image_id) != image_id:
            raise ValueError(f"image ids {self._seen[rel]!r} and {image_id!r} would share the folder {rel}")
        return rel

    def semantic(
        self, image_id: str, image: np.ndarray, pred, classes: Sequence[str], by_score: bool, gt: np.ndarray
    ) -> None:
        """An image's answer (label.png indexed by the full `classes`, merged as eval scored it) and its GT."""
        rel = self._rel(image_id)
        write_image_outputs(
            self.folder / rel, image, pred, image_id, with_overlay=self.overlays, classes=classes, by_score=by_score
        )
        picture = label_png(gt, len(classes))
        write_atomic_file(self.gt_folder / f"{rel}.png", lambda tmp: picture.save(tmp, format="PNG"))

    def queries(self, image_id: str, image: np.ndarray, questions: Sequence[str], preds: Sequence) -> None:
        """The answers to an image's expressions, one folder each, numbered in the dataset's order."""
        rel = self._rel(image_id)
        for k, (question, pred) in enumerate(zip(questions, preds, strict=True)):
            write_image_outputs(
                self.folder / rel / str(k), image, pred, image_id, query=question, with_overlay=self.overlays
            )

    def query(self, image_id: str, image: np.ndarray, question: str, pred) -> None:
        """The answer to an image's one query, as asked."""
        write_image_outputs(
            self.folder / self._rel(image_id), image, pred, image_id, query=question, with_overlay=self.overlays
        )


def _written_by_eval(run_json: Path) -> bool:
    try:
        return json.loads(run_json.read_text()).get("written_by") == WRITTEN_BY
    except (OSError, ValueError, AttributeError):
        return False
