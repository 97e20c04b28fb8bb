"""What the task layer gives: samples of conversations with their masks, checked on construction.

Conventions, shared by every task family:
- a question holds exactly one "<image>" (LLaVA style, "<image>\\n..." at the start);
- an answer never holds the eos string (the collate closes each answer);
- the k-th `<ins>` of an answer pairs with masks[k]: masks.shape[0] == answer.count("<ins>") always;
- masks and `ignore` are at the image's original resolution; an ignore pixel is never a target pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lasagna.tokens import IMAGE, INS, check_user_text


@dataclass(frozen=True, eq=False)
class Conversation:
    """One dialogue about one image.

    question / answer: the first round, exactly as the model sees them before tokenization.
    masks: (N, H, W) bool, N == answer.count("<ins>"), in `<ins>` order.
    followups: later (question, answer) rounds of the same dialogue (multi-turn VQA); text only, no `<image>`
        and no `<ins>`. `rounds` gives every round in order; every answer is supervised.
    """

    question: str
    answer: str
    masks: np.ndarray
    followups: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.question.count(IMAGE) != 1:
            raise ValueError(f"a question must hold exactly one {IMAGE}, got {self.question!r}")
        if self.masks.ndim != 3 or self.masks.dtype != np.bool_:
            raise ValueError(f"masks must be (N, H, W) bool, got {self.masks.dtype} {self.masks.shape}")
        if self.masks.shape[0] != self.answer.count(INS):
            raise ValueError(
                f"answer {self.answer!r} has {self.answer.count(INS)} {INS} but {self.masks.shape[0]} masks were given"
            )
        for question, answer in self.followups:
            if IMAGE in question or INS in answer:
                raise ValueError(f"a follow-up round may hold neither {IMAGE} nor {INS}: {(question, answer)!r}")

    @property
    def rounds(self) -> list[tuple[str, str]]:
        """Every (question, answer) round in order, ready for `lasagna.prompts.render`."""
        return [(self.question, self.answer), *self.followups]


@dataclass(frozen=True)
class SampleMeta:
    """Where a sample comes from and which names it asks about (lower-cased, as in the text).

    classes_present: the names answered with a mask, in mask order (semantic; for single_class one per
        conversation), or the phrases with at least one target (referring). classes_absent: the names the question
        lists that are not present, in question order (semantic), or the phrases without a target (referring).
        Both are empty for reasoning and VQA.
    """

    source: str
    image_id: str
    task: str
    classes_present: list[str] = field(default_factory=list)
    classes_absent: list[str] = field(default_factory=list)


@dataclass(frozen=True, eq=False)
class Sample:
    """An image with its conversations.

    image: (H, W, 3) uint8 RGB. ignore: (H, W) bool, True where the ground truth is void (excluded from the mask
    loss), or None when the task has no notion of it. `conversations` may be empty when a record offers nothing
    to ask (no turns, no class with enough pixels); the mixture then draws another record.
    """

    image: np.ndarray
    conversations: list[Conversation]
    ignore: np.ndarray | None
    meta: SampleMeta

    def __post_init__(self) -> None:
        image = self.image
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{self.meta.image_id}: image must be (H, W, 3) uint8, got {image.dtype} {image.shape}")
        size = image.shape[:2]
        for conv in self.conversations:
            if conv.masks.shape[1:] != size:
                raise ValueError(f"{self.meta.image_id}: masks {conv.masks.shape} do not match the image size {size}")
        if self.ignore is not None:
            if self.ignore.shape != size or self.ignore.dtype != np.bool_:
                raise ValueError(
                    f"{self.meta.image_id}: ignore must be {size} bool, got {self.ignore.dtype} {self.ignore.shape}"
                )
            for conv in self.conversations:
                if (conv.masks & self.ignore).any():
                    raise ValueError(f"{self.meta.image_id}: a target mask covers ignore pixels")


def load_image(load, image_id: str) -> np.ndarray:
    """Call a record's image loader and check it gives (H, W, 3) uint8."""
    image = np.asarray(load())
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{image_id}: load_image() must give (H, W, 3) uint8, got {image.dtype} {image.shape}")
    return image


def no_masks(size: tuple[int, ...]) -> np.ndarray:
    """(0, H, W) bool: the masks of an answer without `<ins>`."""
    return np.zeros((0, *size), dtype=bool)


def user_text(text: str, what: str, image_id: str) -> str:
    """Record text that will be shown to the model: stripped, non-empty, free of special-token strings."""
    check_user_text(text, f"{what} of {image_id}")
    text = " ".join(text.split())  # newlines or runs of spaces inside a query would change the prompt's layout
    if not text:
        raise ValueError(f"{image_id}: empty {what}")
    return text
