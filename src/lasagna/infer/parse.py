"""Read class decisions out of a decoded answer by walking token ids, never by regex over text.

The text span just before each `<ins>` / `<no_ins>` is that decision's name. A name is matched to the queried
classes exactly first (case- and whitespace-insensitive), then fuzzily (rapidfuzz `fuzz.ratio` >= FUZZY_CUTOFF, best
score wins). Every decision keeps its own hidden state, so a dropped or repeated name can never shift a mask onto
another class. A class named twice keeps its first decision; names that match nothing are reported, not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from rapidfuzz import fuzz, process

from .decode import RowResult
from .inputs import normalise

FUZZY_CUTOFF = 85.0


@dataclass
class ParsedItem:
    """One decision: the raw `text`, the queried class it matched (or None), and how."""

    text: str
    name: str | None
    present: bool
    score: float
    hidden: torch.Tensor | None
    match: str  # "exact", "fuzzy", "none" or "duplicate"


def parse_row(tokenizer, row: RowResult, queried: list[str]) -> list[ParsedItem]:
    """Split `row.ids` at its decisions and match each span's text to `queried`."""
    lookup = {normalise(q): q for q in queried}
    keys = list(lookup)
    seen: set[str] = set()
    items = []
    start = 0
    for decision in row.decisions:
        span = row.ids[start : decision.index]
        start = decision.index + 1
        text = normalise(tokenizer.decode(span, skip_special_tokens=True))
        name, how = None, "none"
        if text in lookup:
            name, how = lookup[text], "exact"
        elif text and keys:
            best = process.extractOne(text, keys, scorer=fuzz.ratio, score_cutoff=FUZZY_CUTOFF)
            if best is not None:
                name, how = lookup[best[0]], "fuzzy"
        if name is not None and name in seen:
            name, how = None, "duplicate"
        if name is not None:
            seen.add(name)
        items.append(ParsedItem(text, name, decision.present, decision.score, decision.hidden, how))
    return items
