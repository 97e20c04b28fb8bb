"""The Python API.

    from lasagna import Lasagna
    model = Lasagna.from_pretrained()                      # the embedded ShapeWorld model
    pred = model.segment("scene.png", classes=["red circle", "sky", "blue star"])
    for c in pred.classes:
        print(c.name, c.present, c.score, None if c.mask is None else c.mask.sum())
    pred = model.segment("scene.png", query="the shape with six corners")
    print(model.chat("scene.png", "How many stars are there?"))

Images may be a path, a PIL image, or a numpy array (H, W, 3) uint8 RGB, (H, W) grayscale, (H, W, 4) RGBA, 16-bit
or float in [0, 1]; EXIF orientation of files and PIL images is applied (`lasagna.preprocess` has the full rules).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from .checkpoint import load_pretrained
from .infer.engine import Decoder, Engine, Prediction
from .preprocess import to_rgb

DEFAULT_MODEL = "shapeworld-small"


def default_model_dir() -> Path:
    """Folder of the embedded ShapeWorld model inside the installed package."""
    return Path(str(resources.files("lasagna") / "weights" / DEFAULT_MODEL))


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
