"""Checks of the text users give the engine, before any model work: class lists, queries and the model's context.

Limits (each refusal is a `ValueError` subclass whose message names the input):
- a class name: non-empty once spaces and punctuation are stripped, no comma (commas separate names in the prompt),
  no line break, tab or other control character inside,
  at most `MAX_NAME_CHARS` characters, listed once (after `parse.normalise`), no reserved token string;
- a query or chat text: non-empty, at most `MAX_QUERY_CHARS` characters, no reserved token string;
- a prompt: it must fit the LLM's positions (`cfg.llm.max_position_embeddings`), the one `<image>` id counted as the
  `cfg.vision.num_features` image tokens it becomes (`model/mllm.py` `expand_images`). A chunk of a class list counts
  its answer too (each name again, with its slot), whatever the decoder; a query counts the shortest answer that
  carries a mask ("<ins>."), so a prompt that fits leaves the model room to answer.
Long class lists are never refused: they are split into chunks (`Engine.segment_classes`'s `chunk_size`).
"""

from __future__ import annotations

import re
import unicodedata

from ..config import ModelConfig
from ..tokens import DEFAULT_RESERVED, IMAGE_TOKEN_ID, check_user_text

_STRIP = " \t\n,.;:"


def normalise(name: str) -> str:
    """A class name as names are compared: whitespace runs to one space, edge punctuation gone, lower case."""
    return re.sub(r"\s+", " ", name).strip(_STRIP).lower()


MAX_NAME_CHARS = 200
"""Longest class name, in characters. A name is a few words; 200 leaves room for long compound names while a 7B
model's prompt (2,048 positions, 576 of them the image's) still holds a chunk of them."""

MAX_QUERY_CHARS = 2000
"""Longest query or chat text, in characters (about 400 English words). why: a 100,000-character query ran for
526 s before this cap; the context check alone would still tokenize all of it first."""


class ClassListError(ValueError):
    """A class list or one of its names is malformed."""


class TextTooLongError(ValueError):
    """A name or query is over its character cap."""


class ContextLengthError(ValueError):
    """A prompt (with its answer) needs more positions than the model has."""


def _short(text: str, limit: int = 60) -> str:
    """`text` for an error message: cut to `limit` characters with its full length said."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def check_class_name(name: str, reserved: frozenset[str] = DEFAULT_RESERVED) -> str:
    """One class name, checked; returns its normalised key (`parse.normalise`), which duplicates share."""
    if not isinstance(name, str):
        raise ClassListError(f"class names must be strings, got {type(name).__name__} {name!r}")
    check_user_text(name, "class name", reserved)
    if "," in name:
        raise ClassListError(f"class name {_short(name)} contains a comma, which separates names in the query")
    if len(name) > MAX_NAME_CHARS:
        raise TextTooLongError(f"class name {_short(name)} is longer than {MAX_NAME_CHARS} characters; shorten it")
    if any(unicodedata.category(c) == "Cc" for c in name.strip()):
        # why: `--classes "$(cat classes.txt)"` makes one name of a whole file, answered as one nonsense class
        raise ClassListError(
            f"class name {_short(name)} holds a line break, tab or other control character; separate names with "
            "commas, or give one name a line with --classes-file"
        )
    key = normalise(name)
    if not key:
        raise ClassListError(f"class name {name!r} is empty (once spaces and punctuation are stripped)")
    return key


def check_classes(classes: list[str], reserved: frozenset[str] = DEFAULT_RESERVED) -> list[str]:
    """A class list, checked (`check_class_name`, no name twice); returns the names stripped of outer spaces."""
    if isinstance(classes, str) or not isinstance(classes, list | tuple):
        raise ClassListError(f"classes must be a list of names, got {type(classes).__name__}")
    if not classes:
        raise ClassListError("classes is empty: give at least one class name")
    seen: dict[str, str] = {}
    for name in classes:
        key = check_class_name(name, reserved)
        if key in seen:
            raise ClassListError(f"class {name!r} is listed twice (as {seen[key]!r})")
        seen[key] = name
    return [name.strip() for name in classes]


def check_query(query: str, reserved: frozenset[str] = DEFAULT_RESERVED, what: str = "query") -> str:
    """A query (or chat text), checked: a non-empty string of at most `MAX_QUERY_CHARS` characters, no reserved
    token string."""
    if not isinstance(query, str):
        raise TypeError(f"{what} must be a string, got {type(query).__name__}")
    if len(query) > MAX_QUERY_CHARS:
        raise TextTooLongError(f"{what} {_short(query)} is longer than {MAX_QUERY_CHARS} characters; shorten it")
    check_user_text(query, what, reserved)
    if not query.strip():
        raise ValueError(f"{what} is empty")
    return query


def positions(ids: list[int], image_tokens: int) -> int:
    """LLM positions a row of ids takes once each `<image>` id has become the image's `image_tokens` tokens."""
    images = sum(1 for i in ids if i == IMAGE_TOKEN_ID)
    return len(ids) + images * (image_tokens - 1)


def context_overflow(ids: list[int], cfg: ModelConfig) -> str | None:
    """None when `ids` fit the model's positions, else a sentence saying how many they need."""
    image_tokens, limit = cfg.vision.num_features, cfg.llm.max_position_embeddings
    needed = positions(ids, image_tokens)
    if needed <= limit:
        return None
    return f"needs {needed} positions ({image_tokens} of them the image's) but the model has {limit}"


def check_chunk_context(ids: list[int], cfg: ModelConfig, chunk: list[str]) -> None:
    """Refuse a chunk whose prompt and answer (`ids`) do not fit; name its classes and say what to change."""
    overflow = context_overflow(ids, cfg)
    if overflow is None:
        return
    longest = max(chunk, key=len)
    if len(chunk) == 1:
        raise ContextLengthError(f"class name {_short(longest)}: its prompt {overflow}; shorten the name")
    needed = positions(ids, cfg.vision.num_features)
    smaller = max(1, len(chunk) * cfg.llm.max_position_embeddings // needed - 1)
    names = ", ".join(_short(c, 30) for c in chunk[:8]) + (", ..." if len(chunk) > 8 else "")
    raise ContextLengthError(
        f"the chunk of {len(chunk)} classes [{names}] (longest name {_short(longest)}) {overflow}; "
        f"use a smaller chunk_size (e.g. {smaller}) or shorter names"
    )


def check_query_context(ids: list[int], cfg: ModelConfig, query: str, what: str = "query") -> None:
    """Refuse a query whose prompt and shortest answer (`ids`) do not fit."""
    overflow = context_overflow(ids, cfg)
    if overflow is not None:
        raise ContextLengthError(f"{what} {_short(query)}: its prompt {overflow}; shorten it")
