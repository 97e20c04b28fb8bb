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

import warnings
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from .config import to_dict
from .preprocess import to_rgb

# why lazy: `import lasagna.api` (the CLI, before it even reads its arguments' image) must not pay for torch and
# transformers; the model's code is imported where a model is built or used, in `from_pretrained` and `__init__`.
if TYPE_CHECKING:
    import torch

    from .checkpoint import Header
    from .infer.engine import Decoder, Prediction

DEFAULT_MODEL = "shapeworld-small"
DEFAULT_CHUNK_SIZE = 16
"""Classes asked per prompt: the list is split into chunks of this many, decoded together over one image encode."""


def _count(modules) -> int:
    from .quantize import logical_numel

    modules = modules if isinstance(modules, list) else [modules]
    return sum(logical_numel(p) for m in modules for p in m.parameters())


def default_model_dir() -> Path:
    """Folder of the embedded ShapeWorld model inside the installed package."""
    return Path(str(resources.files("lasagna") / "weights" / DEFAULT_MODEL))


class Lasagna:
    """A loaded model with its tokenizer (and its judges, where it has them): segment class lists and queries, or
    chat."""

    def __init__(self, model, tokenizer, judges=None, header: Header | None = None, folder: Path | None = None):
        from .infer.engine import Engine
        from .infer.inputs import normalise

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.judges = None if judges is None else judges.eval()
        self.engine = Engine(model, tokenizer, self.judges)
        self.header = header
        self.folder = folder
        self.quantize: str | None = None  # the LLM's bitsandbytes quantization (8bit / 4bit), set by from_pretrained
        vocabulary = None if header is None else header.vocabulary
        self._known = None if vocabulary is None else {normalise(name) for name in vocabulary}

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device = "auto",
        quantize: str | None = None,
    ) -> Lasagna:
        """Load a checkpoint folder of ours; without a path, the embedded ShapeWorld model.

        device: auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps. dtype: fp32, bf16, fp16 or a torch dtype
        (None: as saved). quantize: 8bit or 4bit loads the LLM's linear layers through bitsandbytes (its embeddings
        and output layer, the vision tower, projectors and SAM stay in `dtype`); the weights are checked strictly
        before quantization. Combinations the machine cannot run are refused first (`lasagna.devices`)."""
        from .checkpoint import CheckpointError, load_checkpoint
        from .devices import resolve
        from .quantize import quantize_linears

        placement = resolve(device, dtype, quantize)
        folder = Path(path) if path is not None else default_model_dir()
        if path is None and not (folder / "config.json").exists():
            raise FileNotFoundError(f"the embedded model is missing from this installation (looked in {folder})")
        loaded = load_checkpoint(folder, dtype=placement.dtype)
        if placement.quantize is not None:
            llm = loaded.model.llm
            quantize_linears(
                llm,
                placement.quantize,
                placement.device,
                compute_dtype=placement.dtype or llm.get_output_embeddings().weight.dtype,
                # why: the output layer decides every <ins> / <no_ins>, and holds 2% of a 7B LLM's weights
                keep=[llm.get_output_embeddings()],
                progress=loaded.model.cfg.llm.num_hidden_layers >= 16,  # a bar for 7B-sized LLMs only
            )
        loaded.model.to(placement.device)
        if placement.device.type == "cpu":
            # why: on CPU the fused attention kernel is slower than plain matmuls at decoding's shapes (a few
            # rows of tens of tokens against a prefix of hundreds): the LLM part of a 70-class answer of
            # shapeworld-small takes 11% to 14% less time (`benchmarks/kernels.py`); GPUs keep the fused kernel
            loaded.model.llm.set_attn_implementation("eager")
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
            judges.to(placement.device)
        lasagna = cls(loaded.model, loaded.tokenizer, judges, loaded.header, folder)
        lasagna.quantize = placement.quantize
        return lasagna

    @property
    def vocabulary(self) -> list[str] | None:
        """The class names the model was trained on where it knows no others (the embedded model); None when open."""
        return None if self.header is None else self.header.vocabulary

    def unknown_names(self, classes: list[str]) -> list[str]:
        """The names of `classes` outside the model's vocabulary (none for an open-vocabulary model)."""
        if self._known is None:
            return []
        from .infer.inputs import normalise

        return [name for name in classes if normalise(name) not in self._known]

    def info(self) -> dict:
        """What the model is: its sizes, parts, vocabulary, defaults and where it came from (`lasagna info`)."""
        cfg = self.model.cfg
        parts = {
            "vision_tower": self.model.vision_tower,
            "llm": self.model.llm,
            "sam": self.model.sam,
            "projectors": [self.model.projector, self.model.text_projector],
        }
        sizes = {name: _count(part) for name, part in parts.items()}
        if self.judges is not None:
            sizes["judges"] = _count(self.judges)
        header = self.header
        return {
            "folder": None if self.folder is None else str(self.folder),
            "source": None if header is None else header.source,
            "parameters": {**sizes, "total": sum(sizes.values())},
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "device": str(next(self.model.parameters()).device),
            "quantize": self.quantize,
            "llm": {k: getattr(cfg.llm, k) for k in ("arch", "hidden_size", "num_hidden_layers", "vocab_size")},
            "max_positions": cfg.llm.max_position_embeddings,
            "image_sizes": {"clip": cfg.preprocess.clip_size, "sam": cfg.preprocess.sam_size},
            "default_decoder": cfg.default_decoder,
            "default_chunk_size": DEFAULT_CHUNK_SIZE,
            "judges": [] if self.judges is None else [k for k, v in to_dict(self.judges.cfg).items() if v],
            "vocabulary": self.vocabulary,
            "palette": None if header is None else header.palette,
        }

    @property
    def config(self):
        return self.model.cfg

    def segment(
        self,
        image,
        classes: list[str] | None = None,
        query: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        decoder: Decoder | None = None,
    ) -> Prediction:
        """Either `classes` (complex query: every class answered present with a mask, or absent) or `query`.

        `classes` is a list (or tuple) of names, never one string: `classes="sky"` is an error, not the three classes
        "s", "k", "y" and not a comma-separated list (split it yourself: `[c.strip() for c in text.split(",")]`,
        as `lasagna segment --classes` does). Each name is refused, by name, when it is empty, holds a comma, a line
        break or tab, or one of the tokenizer's reserved strings (`</s>`, `<ins>`, ... in any letter case), is longer
        than `lasagna.infer.inputs.MAX_NAME_CHARS` (200) characters, or repeats another name up to case, spaces and
        punctuation. Lists of any length are accepted: they run in chunks of `chunk_size` names, and a chunk whose
        prompt and answer exceed the model's positions is refused with a hint to lower `chunk_size`. A `query` is a
        string of at most `MAX_QUERY_CHARS` (2,000) characters whose prompt must fit the model's positions.

        A class name outside the vocabulary of a model that has one (the embedded ShapeWorld model) is answered all
        the same, but named in `Prediction.warnings` and in a `UserWarning`: its answer means little.
        """
        if (classes is None) == (query is None):
            raise ValueError("give exactly one of classes=[...] or query='...'")
        if isinstance(classes, str):
            from .infer.inputs import ClassListError

            raise ClassListError(
                f"classes must be a list of names, got the string {classes!r}; "
                f"pass classes=[{classes!r}] for one class, or split a comma-separated string into a list"
            )
        if query is not None and not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}; for several use segment_queries")
        rgb = to_rgb(image)
        if classes is None:
            return self.engine.segment_query(rgb, query)
        pred = self.engine.segment_classes(rgb, classes, chunk_size=chunk_size, decoder=decoder)
        for message in self.vocabulary_warnings([c.name for c in pred.classes]):
            pred.warnings.append(message)
            warnings.warn(message, UserWarning, stacklevel=2)
        return pred

    def vocabulary_warnings(self, classes: list[str]) -> list[str]:
        """One message per name of `classes` outside the model's vocabulary (none for an open-vocabulary model)."""
        count = 0 if self.vocabulary is None else len(self.vocabulary)
        return [
            f"{name!r} is not among the {count} class names this model was trained on"
            for name in self.unknown_names(classes)
        ]

    def segment_queries(self, image, queries: list[str]) -> list[Prediction]:
        """One `Prediction` per query (as `segment(image, query=...)` gives), the image encoded once for all."""
        if isinstance(queries, str):
            raise ValueError("queries must be a list of strings; for one query use segment(image, query=...)")
        return self.engine.segment_queries(to_rgb(image), list(queries))

    def chat(self, image, text: str, max_new_tokens: int = 256) -> str:
        return self.engine.chat(to_rgb(image), text, max_new_tokens=max_new_tokens)
