"""Referring expressions: structured queries, their meaning over a scene's objects, and template text.

A query names objects by colour and/or shape (a `Phrase`), optionally narrowed by an extreme ("the leftmost
star", "the large circle") or a relation to a uniquely named anchor ("the star left of the blue square"), and is
singular ("the ...": exactly one target) or plural ("all the stars": every match, K >= 1 masks). A query that
names nothing in the scene is a no-target expression (K = 0).

Positions are visible centroids. To keep every expression true for a person too, `resolve` refuses close calls:
an extreme must beat the runner-up by `POSITION_MARGIN` of the image (or `SIZE_RATIO` in area), and a relation
must hold by the margin for each target and fail outright (offset <= 0) for every other match.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from typing import Literal

from .scene import Scene, SceneObject
from .vocab import COLOURS, HELD_OUT, SHAPES, is_open, plural, scene_seed, thing_name

POSITION_MARGIN = 0.08
"""Fraction of the image size by which positions must differ to count as left/right/above/below."""
SIZE_RATIO = 1.6
"""Area ratio by which the largest (smallest) object must beat the runner-up."""
NO_TARGET_RATE = 0.15
EXPRESSIONS_PER_SCENE = 4

Direction = Literal["left", "right", "top", "bottom"]
Extreme = Literal["left", "right", "top", "bottom", "large", "small"]
# (axis of the centroid, sign): sign * coordinate grows towards the direction.
_AXES: dict[str, tuple[int, int]] = {"left": (0, -1), "right": (0, 1), "top": (1, -1), "bottom": (1, 1)}
_EXTREME_TEXT: dict[str, tuple[str, ...]] = {
    "left": ("the leftmost {np}", "the {np} on the left"),
    "right": ("the rightmost {np}", "the {np} on the right"),
    "top": ("the topmost {np}", "the {np} at the top"),
    "bottom": ("the bottommost {np}", "the {np} at the bottom"),
    "large": ("the large {np}", "the biggest {np}"),
    "small": ("the small {np}", "the smallest {np}"),
}
_RELATION_TEXT: dict[str, tuple[str, ...]] = {
    "left": ("left of", "to the left of"),
    "right": ("right of", "to the right of"),
    "top": ("above",),
    "bottom": ("below",),
}

_OPPOSITE: dict[str, str] = {
    "left": "right",
    "right": "left",
    "top": "bottom",
    "bottom": "top",
    "large": "small",
    "small": "large",
}

# An extreme can say "left" too ("the star on the left"), so relations are told by their phrases.
_RELATION_PATTERN = re.compile(r"\b(?:" + "|".join(t for ts in _RELATION_TEXT.values() for t in ts) + r")\b")


def holds_relation(text: str) -> bool:
    """Whether `text` (an expression, or a question holding one) relates its head to an anchor ("left of", "above")."""
    return _RELATION_PATTERN.search(text) is not None


@dataclass(frozen=True)
class Phrase:
    """Objects with a colour and/or a shape; None matches any ("shape" when both are None)."""

    colour: str | None = None
    shape: str | None = None

    def matches(self, obj: SceneObject) -> bool:
        return (self.colour is None or obj.colour == self.colour) and (self.shape is None or obj.shape == self.shape)

    def text(self, many: bool = False) -> str:
        noun = self.shape or "shape"
        noun = plural(noun) if many else noun
        return f"{self.colour} {noun}" if self.colour else noun

    def combo(self) -> str | None:
        """The colour-shape class the phrase names, if it names one."""
        return thing_name(self.colour, self.shape) if self.colour and self.shape else None


@dataclass(frozen=True)
class RefQuery:
    """A referring expression's meaning; `extreme` and `relation` are exclusive, `anchor` goes with `relation`."""

    head: Phrase
    plural: bool = False
    extreme: Extreme | None = None
    relation: Direction | None = None
    anchor: Phrase | None = None

    def phrases(self) -> tuple[Phrase, ...]:
        return (self.head,) if self.anchor is None else (self.head, self.anchor)


@dataclass(frozen=True)
class ReferringItem:
    """One expression of a scene: its text, target instance ids (empty: no target) and the query it came from."""

    text: str
    targets: tuple[int, ...]
    query: RefQuery

    def to_dict(self) -> dict:
        return {"text": self.text, "targets": list(self.targets)}


def resolve(query: RefQuery, objects: tuple[SceneObject, ...], size: int) -> tuple[int, ...] | None:
    """Target instance ids of `query`, () for no target, or None when the query is ambiguous in this scene."""
    matches = [o for o in objects if query.head.matches(o)]
    margin = POSITION_MARGIN * size
    if query.relation is not None:
        anchors = [o for o in objects if query.anchor is not None and query.anchor.matches(o)]
        if len(anchors) != 1:
            return None
        axis, sign = _AXES[query.relation]
        offsets = [(o, sign * (o.centroid[axis] - anchors[0].centroid[axis])) for o in matches if o is not anchors[0]]
        if any(0 < off < margin for _, off in offsets):
            return None
        matches = [o for o, off in offsets if off >= margin]
    elif query.extreme is not None:
        if len(matches) < 2:
            return None
        matches = _extreme(matches, query.extreme, margin)
        if not matches:
            return None
    if not query.plural and len(matches) > 1:
        return None
    return tuple(o.instance_id for o in matches)


def _extreme(objects: list[SceneObject], extreme: str, margin: float) -> list[SceneObject]:
    """[the winner] if it clearly beats the runner-up, else []."""
    if extreme in ("large", "small"):
        ranked = sorted(objects, key=lambda o: o.full_area, reverse=extreme == "large")
        a, b = ranked[0].full_area, ranked[1].full_area
        clear = a >= SIZE_RATIO * b if extreme == "large" else b >= SIZE_RATIO * a
    else:
        axis, sign = _AXES[extreme]
        ranked = sorted(objects, key=lambda o: sign * o.centroid[axis], reverse=True)
        clear = sign * (ranked[0].centroid[axis] - ranked[1].centroid[axis]) >= margin
    return [ranked[0]] if clear else []


def render(query: RefQuery, rng: random.Random) -> str:
    """Template text of a query; `rng` picks among synonymous templates."""
    head = query.head.text(many=query.plural)
    if query.relation is not None:
        assert query.anchor is not None
        det = "all the" if query.plural else "the"
        return f"{det} {head} {rng.choice(_RELATION_TEXT[query.relation])} the {query.anchor.text()}"
    if query.extreme is not None:
        return rng.choice(_EXTREME_TEXT[query.extreme]).format(np=head)
    if query.plural:
        return rng.choice((f"all the {head}", f"every {query.head.text()}"))
    return f"the {head}"


def referring_items(
    scene: Scene, count: int = EXPRESSIONS_PER_SCENE, no_target_rate: float = NO_TARGET_RATE, twins: bool = False
) -> tuple[ReferringItem, ...]:
    """The scene's expressions, deterministic from (split, index, no_target_rate, twins): each is a no-target one
    with probability `no_target_rate` (a scene without objects gets one, no-target), the others pick a kind (plain,
    extreme, relation, plural) at random among those this scene supports. A no-target expression names something
    absent or states a relation that holds for nothing, about one in three of them the latter.

    twins: each expression with a relation or an extreme is followed by its twin in the opposite direction ("left
    of" / "right of", "leftmost" / "rightmost", "large" / "small") where that is unambiguous here: the same objects,
    another answer, so only where things are tells the two apart (the twin's template is drawn anew: "the leftmost
    star" may meet "the star on the right"). The first `count` draws are the same with or without twins."""
    rng = random.Random(scene_seed(scene.split, scene.index) * 4 + 2)
    if not scene.objects:
        count = 1
    items: list[ReferringItem] = []
    pools: dict[str, list[RefQuery]] = {}
    for _ in range(count):
        negative = not scene.objects or rng.random() < no_target_rate
        kinds = ["negative"] if negative else rng.sample(("plain", "extreme", "relation", "plural"), 4)
        for kind in kinds:
            if kind not in pools:
                pools[kind] = _candidates(scene, kind)
            item = _pick(scene, kind, pools[kind], rng, {i.text for i in items})
            if item is not None:
                items.append(item)
                break
    if not twins:
        return tuple(items)
    used, paired = {i.text for i in items}, []
    for item in items:
        paired.append(item)
        twin = _twin(scene, item.query, rng, used)
        if twin is not None:
            paired.append(twin)
            used.add(twin.text)
    return tuple(paired)


def _twin(scene: Scene, query: RefQuery, rng: random.Random, used: set[str]) -> ReferringItem | None:
    """`query` turned the opposite way, if it resolves in `scene` and its text is new; None otherwise."""
    if query.relation is not None:
        twin = replace(query, relation=_OPPOSITE[query.relation])
    elif query.extreme is not None:
        twin = replace(query, extreme=_OPPOSITE[query.extreme])
    else:
        return None
    targets = resolve(twin, scene.objects, scene.size)
    text = render(twin, rng)
    if targets is None or text in used:
        return None
    return ReferringItem(text, targets, twin)


def _pick(
    scene: Scene, kind: str, candidates: list[RefQuery], rng: random.Random, used: set[str]
) -> ReferringItem | None:
    """A random valid query of `kind` among `candidates` whose text is not in `used`, or None."""
    for query in rng.sample(candidates, len(candidates)):
        if not _speakable(query, scene.split):
            continue
        targets = resolve(query, scene.objects, scene.size)
        if targets is None or (len(targets) == 0) != (kind == "negative"):
            continue
        if kind == "plural" and len(targets) < 2:
            continue
        text = render(query, rng)
        if text not in used:
            return ReferringItem(text, targets, query)
    return None


def _speakable(query: RefQuery, split: str) -> bool:
    """Closed splits never utter a held-out name, not even to say it is absent."""
    return is_open(split) or all(p.combo() not in HELD_OUT for p in query.phrases())


def _candidates(scene: Scene, kind: str) -> list[RefQuery]:
    objs = scene.objects
    present = _present_phrases(objs)
    if kind == "plain":
        return [RefQuery(p) for p in present]
    if kind == "extreme":
        return [RefQuery(p, extreme=e) for p in present for e in _EXTREME_TEXT]
    # An anchor names exactly one object, which the head must not also describe ("the red circle left of the red
    # shape" would be about the anchor itself).
    anchors = [(p, o) for p in present[:-1] for o in objs if p.matches(o) and sum(map(p.matches, objs)) == 1]
    relations = [
        RefQuery(p, relation=d, anchor=a)
        for p in present
        for a, anchor in anchors
        if not p.matches(anchor)
        for d in _AXES
    ]
    if kind == "relation":
        return relations
    if kind == "plural":
        plurals = [RefQuery(p, plural=True) for p in present if sum(p.matches(o) for o in objs) >= 2]
        return plurals + [replace(q, plural=True) for q in relations]
    if kind == "negative":
        absent = [p for p in _all_phrases() if not any(p.matches(o) for o in objs)]
        return [RefQuery(p, plural=plural_) for p in absent for plural_ in (False, True)] + relations
    raise ValueError(f"unknown referring kind {kind!r}")


def _present_phrases(objects: tuple[SceneObject, ...]) -> list[Phrase]:
    """Every phrase that matches at least one object, most specific first."""
    phrases: list[Phrase] = []
    for o in objects:
        for p in (Phrase(o.colour, o.shape), Phrase(None, o.shape), Phrase(o.colour, None)):
            if p not in phrases:
                phrases.append(p)
    return [*phrases, Phrase()]


def _all_phrases() -> list[Phrase]:
    return (
        [Phrase(c, s) for c in COLOURS for s in SHAPES]
        + [Phrase(None, s) for s in SHAPES]
        + [Phrase(c, None) for c in COLOURS]
    )
