"""The Python API.

    from lasagna import Lasagna
    model = Lasagna.from_pretrained()                      # the embedded ShapeWorld model
    pred = model.segment("scene.png", classes=["red circle", "sky", "blue star"])
    for c in pred.classes:
        print(c.name, c.present, c.score, None if c.mask is None else c.mask.sum())
    pred = model.segment("scene.png", query="the shape with six corners")
    print(model.chat("scene.png", "How many stars are there?"))

Images may be a path, a PIL image, or a numpy array (H, W, 3) uint8 RGB, (H, W) grayscale, (H, W, 4) RGBA or 16-bit;
EXIF orientation of files and PIL images is applied.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .checkpoint import CheckpointError, load_checkpoint
from .data.sources.imageio import read_image
from .infer.engine import Decoder, Engine, Prediction

DEFAULT_MODEL = "shapeworld-small"


def default_model_dir() -> Path:
    """Folder of the embedded ShapeWorld model inside the installed package."""
    return Path(str(resources.files("lasagna") / "weights" / DEFAULT_MODEL))


def to_rgb(image) -> np.ndarray:
    """Any supported image input -> (H, W, 3) uint8 RGB."""
    if isinstance(image, str | Path):
        return read_image(image)
    if isinstance(image, Image.Image):
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            image = np.asarray(image)
        else:
            return np.array(image.convert("RGB"), dtype=np.uint8)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a path, PIL image or numpy array, got {type(image).__name__}")
    array = image
    if array.dtype == np.uint16 or (array.dtype.kind in "iu" and array.size and array.max() > 255):
        array = ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        raise ValueError(f"image array must be uint8 or uint16, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    elif array.ndim == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {image.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    return np.ascontiguousarray(array)


class Lasagna:
    """A loaded model with its tokenizer (and its judges, where it has them): segment class lists and queries, or
    chat."""

    def __init__(self, model, tokenizer, judges=None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.judges = None if judges is None else judges.eval()
        self.engine = Engine(model, tokenizer, self.judges)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, dtype: torch.dtype | None = None) -> Lasagna:
        """Load a checkpoint folder of ours; without a path, the embedded ShapeWorld model."""
        folder = Path(path) if path is not None else default_model_dir()
        if path is None and not (folder / "config.json").exists():
            raise FileNotFoundError(f"the embedded model is missing from this installation (looked in {folder})")
        loaded = load_checkpoint(folder, dtype=dtype)
        judges = None
        if loaded.judges.any:
            try:
                from .judges import Judges
            except ModuleNotFoundError as err:
                if err.name != "lasagna.judges":
                    raise
                raise CheckpointError(
                    f"{folder} has judges beside its model ({loaded.judges}), which need the lasagna.judges package"
                ) from err
            judges = Judges.from_state(loaded.model, loaded.judges, loaded.judges_state, str(folder))
        return cls(loaded.model, loaded.tokenizer, judges)

    @property
    def config(self):
        return self.model.cfg

    def segment(
        self,
        image,
        classes: list[str] | None = None,
        query: str | None = None,
        chunk_size: int = 16,
        decoder: Decoder | None = None,
    ) -> Prediction:
        """Either `classes` (complex query: every class answered present with a mask, or absent) or `query`."""
        if (classes is None) == (query is None):
            raise ValueError("give exactly one of classes=[...] or query='...'")
        rgb = to_rgb(image)
        if classes is not None:
            return self.engine.segment_classes(rgb, list(classes), chunk_size=chunk_size, decoder=decoder)
        return self.engine.segment_query(rgb, query)

    def segment_queries(self, image, queries: list[str]) -> list[Prediction]:
        """One `Prediction` per query (as `segment(image, query=...)` gives), the image encoded once for all."""
        if isinstance(queries, str):
            raise ValueError("queries must be a list of strings; for one query use segment(image, query=...)")
        return self.engine.segment_queries(to_rgb(image), list(queries))

    def chat(self, image, text: str, max_new_tokens: int = 256) -> str:
        return self.engine.chat(to_rgb(image), text, max_new_tokens=max_new_tokens)
