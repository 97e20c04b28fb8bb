"""What the engine answers about an image: per queried class its decision, score and mask (`ClassResult`), and the
whole answer (`Prediction`) with its text, masks, warnings and semantic label map."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .semantic import merge_semantic


@dataclass
class ClassResult:
    """One queried class: `present`, P(<ins>) `score` (with a judge, the fused P, `Engine._decide`),
    `mask` (H, W) bool at the original size when present.

    `answered` is False when free decoding never named the class (it is then reported absent). `llm_present` is the
    LLM's own `<ins>`/`<no_ins>`: `present` differs from it where a judge overruled it, or where the mask came out
    empty (then `Prediction.warnings` says so).
    """

    name: str
    present: bool
    score: float
    mask: np.ndarray | None = None
    answered: bool = True
    llm_present: bool | None = None  # the LLM's own decision, where a judge or an empty mask may have overruled it


@dataclass
class Prediction:
    image_size: tuple[int, int]
    classes: list[ClassResult] = field(default_factory=list)
    text: str = ""
    masks: list[np.ndarray] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    logits: torch.Tensor | None = field(default=None, repr=False)  # (K_present, H, W), order of present classes
    # query mode: P(<ins>) within {<ins>, <no_ins>} at each decision of the answer, in order, <no_ins> ones too
    # (with a judge, the fused P that decides)
    scores: list[float] = field(default_factory=list)
    # what the caller should know of this answer (class names outside the model's vocabulary, say)
    warnings: list[str] = field(default_factory=list)
    # with a judge, class lists: (len(classes), 2) the LLM's and the judge's log-odds of each queried class, NaN where
    # free decoding never named it; queries: (decisions, 2) alike, in answer order (what a judge's fusion is fit on);
    # the judge's is NaN for a slot it could not have called present, whose mask was not drawn (`Judge.reach`)
    evidence: torch.Tensor | None = field(default=None, repr=False)

    @property
    def present(self) -> list[str]:
        return [c.name for c in self.classes if c.present]

    @property
    def absent(self) -> list[str]:
        return [c.name for c in self.classes if not c.present]

    def semantic_map(
        self, classes: list[str] | None = None, threshold: float = 0.0, by_score: bool = True
    ) -> np.ndarray:
        """(H, W) int64: index into `classes` (default: the queried list; else it must hold every present class) per
        pixel, -1 where unlabelled.

        Where masks overlap, a pixel goes to the class with the highest P(present) * P(pixel in mask); with
        `by_score=False`, to the highest mask logit alone (as the released code merges).
        """
        classes = classes or [c.name for c in self.classes]
        index = {name: i for i, name in enumerate(classes)}
        present = [c for c in self.classes if c.present]
        missing = [c.name for c in present if c.name not in index]
        if missing:
            raise ValueError(f"classes lacks {missing!r}, answered present: the map needs an index for each")
        if self.logits is None or not present:
            return np.full(self.image_size, -1, dtype=np.int64)
        ids = torch.tensor([index[c.name] for c in present])
        scores = torch.tensor([c.score for c in present]) if by_score else None
        return merge_semantic(self.logits, ids, threshold, scores).numpy()
