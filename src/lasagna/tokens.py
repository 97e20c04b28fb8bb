"""The special tokens of LaSagnA, defined once.

Ids are never hard-coded: they depend on the tokenizer (a released LLaMA tokenizer adds them after its 32000
base entries, a ShapeWorld tokenizer has its own order), so every id is looked up with `token_ids(tokenizer)`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

IMAGE = "<image>"
IM_START = "<im_start>"
IM_END = "<im_end>"
SEMANTIC = "<semantic>"
CAT_START = "<cat_start>"
CAT_END = "<cat_end>"
INS = "<ins>"
NO_INS = "<no_ins>"

# Registration order matters for released checkpoints: it fixes the ids the weights were trained with.
INPUT_TOKENS = (CAT_START, CAT_END, SEMANTIC)
OUTPUT_TOKENS = (INS, NO_INS)
IMAGE_WRAP_TOKENS = (IM_START, IM_END)
ALL_TOKENS = (*INPUT_TOKENS, *OUTPUT_TOKENS, *IMAGE_WRAP_TOKENS, IMAGE)

# The base specials of every tokenizer lasagna builds or loads (the plain ShapeWorld tokenizer and LLaMA's): user
# text checked without a tokenizer at hand (training data, `lasagna data check`) is checked against these too.
BASE_SPECIALS = ("<s>", "</s>", "<unk>", "<pad>")

IGNORE_INDEX = -100
# `<image>` is not a vocabulary entry (the released vocab has no row for it): the encoder emits this sentinel id and
# the model replaces it with the projected image features.
IMAGE_TOKEN_ID = -200

_SPECIAL_RE = re.compile("|".join(re.escape(t) for t in sorted(ALL_TOKENS, key=len, reverse=True)))


@dataclass(frozen=True)
class TokenIds:
    """Ids of the special tokens in one tokenizer."""

    image: int
    im_start: int
    im_end: int
    semantic: int
    cat_start: int
    cat_end: int
    ins: int
    no_ins: int
    eos: int
    pad: int


def register_tokens(tokenizer) -> int:
    """Add the LaSagnA tokens to `tokenizer` in the released order; returns how many were new."""
    added = tokenizer.add_tokens(list(INPUT_TOKENS), special_tokens=True)
    added += tokenizer.add_tokens([INS])
    added += tokenizer.add_tokens([NO_INS])
    added += tokenizer.add_tokens(list(IMAGE_WRAP_TOKENS), special_tokens=True)
    return added


def token_ids(tokenizer) -> TokenIds:
    """Look up every special id; a tokenizer that lacks one is an error naming it."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in ALL_TOKENS if t != IMAGE and t not in vocab]
    if missing:
        raise ValueError(f"tokenizer lacks the LaSagnA tokens {missing}; call lasagna.tokens.register_tokens")
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return TokenIds(
        image=IMAGE_TOKEN_ID,
        im_start=vocab[IM_START],
        im_end=vocab[IM_END],
        semantic=vocab[SEMANTIC],
        cat_start=vocab[CAT_START],
        cat_end=vocab[CAT_END],
        ins=vocab[INS],
        no_ins=vocab[NO_INS],
        eos=tokenizer.eos_token_id,
        pad=pad,
    )


def find_special(text: str) -> list[str]:
    """The special-token strings that occur in `text`, in order (exact case: what tokenization splits at)."""
    return _SPECIAL_RE.findall(text)


class ReservedTextError(ValueError):
    """User text (a class name, a query) holds a string the tokenizer reserves."""


def reserved_strings(tokenizer=None) -> frozenset[str]:
    """The strings user text may not contain: LaSagnA's tokens (`<image>` too, which has no vocabulary row),
    `BASE_SPECIALS` and, given a tokenizer, its special tokens and every added token.

    Whitespace-only entries are left out: a tokenizer that adds " " or "\\n" as tokens would refuse every text.
    """
    found = {*ALL_TOKENS, *BASE_SPECIALS}
    if tokenizer is not None:
        found.update(str(t) for t in tokenizer.all_special_tokens)
        found.update(str(t) for t in tokenizer.get_added_vocab())
    return frozenset(t for t in found if t.strip())


DEFAULT_RESERVED = reserved_strings()


@functools.lru_cache(maxsize=8)
def _reserved_pattern(reserved: frozenset[str]) -> re.Pattern:
    # longest first, so "<no_ins>" is reported as itself and not as a near match
    alternatives = sorted(reserved, key=lambda t: (-len(t), t))
    return re.compile("|".join(re.escape(t) for t in alternatives), re.IGNORECASE)


def reserved_in(text: str, reserved: frozenset[str] = DEFAULT_RESERVED) -> list[str]:
    """The reserved strings (`reserved_strings`) that `text` holds in any letter case, sorted, spelt as listed."""
    if not reserved:
        return []
    pattern = _reserved_pattern(reserved)
    found = {m.group(0) for variant in (text, text.lower()) for m in pattern.finditer(variant)}
    lookup = {t.casefold(): t for t in reserved}
    return sorted({lookup.get(f.casefold(), f) for f in found})


def check_user_text(text: str, what: str = "text", reserved: frozenset[str] = DEFAULT_RESERVED) -> str:
    """Reject user text (a class name or a query) that holds a reserved string (`reserved_strings`) in any letter
    case.

    A class named "<ins>" would otherwise become the mask token and shift every later mask by one; one named "</s>"
    ends the prompt early. Any case, because class names are lower-cased into the prompt ("<INS>" becomes "<ins>")
    and some tokenizers match added tokens without regard to case.
    """
    tokens = reserved_in(text, reserved)
    if tokens:
        raise ReservedTextError(
            f"{what} {text!r} contains the reserved token string(s) {tokens} (checked in any letter case): "
            "the model's tokenizer gives them a special meaning; rename or rephrase it"
        )
    return text
