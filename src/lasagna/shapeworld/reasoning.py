"""Reasoning queries: descriptions that need a concept step ("the shape with six corners" -> hexagon).

Each scene gets one query target: a shape, a colour, a colour-shape combination or a stuff region present in the
scene; the target mask is the union of every matching object (or the stuff's pixels). The record carries three
phrasings built from different descriptions of the same concept, either as short noun phrases or as full
sentences (`is_sentence`), chosen per scene.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from .scene import Scene
from .vocab import plural, scene_seed

SHAPE_DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    # Post-modifiers that read the same after a singular or a plural noun ("shape(s) with six corners").
    "circle": ("with no corners and no hole", "as round as a coin", "looking like a full moon"),
    "square": ("with four equal sides", "with four right angles", "looking like a chessboard tile"),
    "triangle": ("with three corners", "with three straight sides", "looking like a slice of pizza"),
    "star": ("with five points", "shaped like a sea creature with five arms", "shaped like a sheriff's badge"),
    "hexagon": ("with six corners", "with six straight sides", "shaped like a honeycomb cell"),
    "heart": ("used as a symbol of love", "seen on Valentine's Day cards", "that people draw to say 'I love you'"),
    "cross": ("looking like a plus sign", "made of two crossing bars", "seen on a first-aid kit"),
    "ring": ("with a hole in the middle", "looking like a donut", "shaped like a wedding band"),
}
COLOUR_EXAMPLES: dict[str, tuple[str, ...]] = {
    "red": ("a ripe tomato", "a fire engine", "a stop sign"),
    "orange": ("a carrot", "a pumpkin", "a tangerine"),
    "yellow": ("a ripe banana", "a lemon", "an egg yolk"),
    "green": ("a fresh lime", "a frog", "a four-leaf clover"),
    "cyan": ("a turquoise stone", "a tropical lagoon", "a robin's egg"),
    "blue": ("a sapphire", "a cornflower", "denim jeans"),
    "purple": ("ripe grapes", "an aubergine", "a lavender flower"),
    "pink": ("a flamingo", "cotton candy", "bubble gum"),
}
STUFF_DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "sky": ("the place where birds fly", "the part where clouds drift", "the area above the horizon"),
    "grass": ("the place where cows could graze", "the ground a lawnmower would cut", "the soft ground for a picnic"),
    "water": ("the place where a boat could float", "the area where fish could swim", "the part you could swim in"),
    "sand": ("the ground you find on a beach", "where children build castles at the beach", "the grainy desert ground"),
    "brick": ("the wall a mason would build", "the part made of fired clay blocks", "the masonry"),
    "wood": ("the part made of timber", "the planks a carpenter works with", "the surface cut from trees"),
}
_NOUNS = (("shape", "shapes"), ("one", "ones"), ("object", "objects"))
_COLOUR_CLAUSES = ("coloured like {x}", "with the colour of {x}")
_SENTENCES = {
    False: (
        "Can you segment {np} in this image?",
        "Please find {np} in the picture.",
        "Which part of this image is {np}? Please output its mask.",
        "I am looking for {np}. Where is it?",
    ),
    True: (
        "Can you segment {np} in this image?",
        "Please find {np} in the picture.",
        "Which parts of this image are {np}? Please output their masks.",
        "I am looking for {np}. Where are they?",
    ),
}
PHRASINGS = 3
# Relative odds of the concept kinds (a kind absent from the scene is skipped).
_KIND_WEIGHTS = {"shape": 35, "colour": 25, "combo": 20, "stuff": 20}


@dataclass(frozen=True)
class ReasoningItem:
    """One reasoning query: phrasings of one target, which is `instance_ids` (objects) or `stuff` (a region)."""

    queries: tuple[str, ...]
    is_sentence: bool
    instance_ids: tuple[int, ...]
    stuff: str | None
    concept: str
    explanation: str

    def mask(self, scene: Scene) -> np.ndarray:
        """(S, S) uint8 target mask: 1 on the target, 0 elsewhere."""
        hit = scene.stuff_mask(self.stuff) if self.stuff else np.isin(scene.instances, self.instance_ids)
        return hit.astype(np.uint8)

    def to_dict(self) -> dict:
        return {
            "queries": list(self.queries),
            "is_sentence": self.is_sentence,
            "targets": list(self.instance_ids),
            "stuff": self.stuff,
            "concept": self.concept,
            "explanation": self.explanation,
        }


def reasoning_item(scene: Scene) -> ReasoningItem:
    """The scene's reasoning query, deterministic from (split, index); its target is never empty."""
    rng = random.Random(scene_seed(scene.split, scene.index) * 4 + 3)
    objs = scene.objects
    pools = {
        "shape": sorted({o.shape for o in objs}),
        "colour": sorted({o.colour for o in objs}),
        "combo": sorted({(o.colour, o.shape) for o in objs}),
        "stuff": list(scene.stuff),
    }
    kinds = [k for k in _KIND_WEIGHTS if pools[k]]
    kind = rng.choices(kinds, weights=[_KIND_WEIGHTS[k] for k in kinds])[0]
    value = rng.choice(pools[kind])
    is_sentence = rng.random() < 0.5
    if kind == "stuff":
        descriptions = rng.sample(STUFF_DESCRIPTIONS[value], PHRASINGS)
        queries = [_sentence(rng, d, False) if is_sentence else d for d in descriptions]
        return ReasoningItem(tuple(queries), is_sentence, (), value, value, f"That is the {value}.")
    colour, shape = value if kind == "combo" else (value, None) if kind == "colour" else (None, value)
    ids = tuple(o.instance_id for o in objs if o.colour == (colour or o.colour) and o.shape == (shape or o.shape))
    many = len(ids) > 1
    queries: list[str] = []
    while len(queries) < PHRASINGS:
        np_ = ("all the " if many else "the ") + _thing_phrase(rng, colour, shape, many)
        query = _sentence(rng, np_, many) if is_sentence else np_
        if query not in queries:
            queries.append(query)
    concept = " ".join(w for w in (colour, shape) if w)
    return ReasoningItem(tuple(queries), is_sentence, ids, None, concept, _explain(colour, shape, many))


def _thing_phrase(rng: random.Random, colour: str | None, shape: str | None, many: bool) -> str:
    """A noun phrase without determiner, e.g. "shape with six corners, coloured like a lemon"."""
    noun = rng.choice(_NOUNS)[int(many)]
    parts = [noun]
    if shape:
        parts.append(rng.choice(SHAPE_DESCRIPTIONS[shape]))
    if colour:
        clause = rng.choice(_COLOUR_CLAUSES).format(x=rng.choice(COLOUR_EXAMPLES[colour]))
        parts.append((", " if shape else "") + clause)
    return " ".join(parts).replace(" , ", ", ")


def _sentence(rng: random.Random, np_: str, many: bool) -> str:
    return rng.choice(_SENTENCES[many]).format(np=np_)


def _explain(colour: str | None, shape: str | None, many: bool) -> str:
    reasons = []
    if shape:
        reasons.append(f"a {shape} is a shape {SHAPE_DESCRIPTIONS[shape][0]}")
    if colour:
        reasons.append(f"{colour} is the colour of {COLOUR_EXAMPLES[colour][0]}")
    noun = (plural(shape) if many else shape) if shape else ("shapes" if many else "shape")
    answer = ("all the " if many else "the ") + " ".join(w for w in (colour, noun) if w)
    text = " and ".join(reasons)
    return f"{text[0].upper()}{text[1:]}, so the answer is {answer}."
