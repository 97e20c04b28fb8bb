"""ShapeWorld: a deterministic procedural scene world for training and testing small LaSagnA models on CPU.

A scene is a pure function of (split, index, size): stuff bands (sky, grass, water, sand, brick, wood) and coloured
shapes, with pixel-exact semantic and instance maps, referring expressions, reasoning queries and VQA turns.
"""

from .reasoning import ReasoningItem, reasoning_item
from .referring import Phrase, ReferringItem, RefQuery, holds_relation, referring_items, resolve
from .scene import Scene, SceneObject, scene
from .sources import ShapeWorldReasoning, ShapeWorldReferring, ShapeWorldSemantic, ShapeWorldVQA
from .vocab import COLOURS, HELD_OUT, SHAPES, SPLIT_LENGTHS, SPLITS, STUFF, classes, thing_name
from .vqa import vqa_turns

__all__ = [
    "COLOURS",
    "HELD_OUT",
    "SHAPES",
    "SPLITS",
    "SPLIT_LENGTHS",
    "STUFF",
    "Phrase",
    "ReasoningItem",
    "RefQuery",
    "ReferringItem",
    "Scene",
    "SceneObject",
    "ShapeWorldReasoning",
    "ShapeWorldReferring",
    "ShapeWorldSemantic",
    "ShapeWorldVQA",
    "classes",
    "holds_relation",
    "reasoning_item",
    "referring_items",
    "resolve",
    "scene",
    "thing_name",
    "vqa_turns",
]
