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

from .checkpoint import load_pretrained
from .data.sources.imageio import read_image
from .infer.engine import Decoder, Engine, Prediction
from .infer.inputs import ClassListError

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
    """A loaded model with its tokenizer: segment class lists and queries, or chat."""

    def __init__(self, model, tokenizer):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.engine = Engine(model, tokenizer)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, dtype: torch.dtype | None = None) -> Lasagna:
        """Load a checkpoint folder of ours; without a path, the embedded ShapeWorld model."""
        folder = Path(path) if path is not None else default_model_dir()
        if path is None and not (folder / "config.json").exists():
            raise FileNotFoundError(f"the embedded model is missing from this installation (looked in {folder})")
        model, tokenizer = load_pretrained(folder, dtype=dtype)
        return cls(model, tokenizer)

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
        """Either `classes` (complex query: every class answered present with a mask, or absent) or `query`.

        `classes` is a list (or tuple) of names, never one string: `classes="sky"` is an error, not the three classes
        "s", "k", "y" and not a comma-separated list (split it yourself: `[c.strip() for c in text.split(",")]`,
        as `lasagna segment --classes` does). Each name is refused, by name, when it is empty, holds a comma or one
        of the tokenizer's reserved strings (`</s>`, `<ins>`, ... in any letter case), is longer than
        `lasagna.infer.inputs.MAX_NAME_CHARS` (200) characters, or repeats another name up to case, spaces and
        punctuation. Lists of any length are accepted: they run in chunks of `chunk_size` names, and a chunk whose
        prompt and answer exceed the model's positions is refused with a hint to lower `chunk_size`. A `query` is a
        string of at most `MAX_QUERY_CHARS` (2,000) characters whose prompt must fit the model's positions.
        """
        if (classes is None) == (query is None):
            raise ValueError("give exactly one of classes=[...] or query='...'")
        if isinstance(classes, str):
            raise ClassListError(
                f"classes must be a list of names, got the string {classes!r}; "
                f"pass classes=[{classes!r}] for one class, or split a comma-separated string into a list"
            )
        if query is not None and not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}; for several use segment_queries")
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
