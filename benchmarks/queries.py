"""Query speed: each query of an image decoded alone vs all of them decoded together, side by side.

    python benchmarks/queries.py [--model DIR] [--scenes 40] [--split test]

For each of the first `--scenes` ShapeWorld scenes, its referring expressions are answered about one image encoding
(a) one at a time, each query running the whole prompt (system prompt, image, template) through the LLM, and (b) with
`Engine.answer_queries`, which runs the prompt the queries share once and decodes their answers as one batch. Prints
seconds per scene for each, the ratio a/b, and on how many expressions the two gave the same answer text (they should
agree; bf16 arithmetic in a batch can tip a near tie).
"""

from __future__ import annotations

import argparse
import time

import torch

from lasagna.api import Lasagna
from lasagna.shapeworld import ShapeWorldReferring


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--scenes", type=int, default=40)
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    engine = Lasagna.from_pretrained(args.model).engine
    source = ShapeWorldReferring(args.split)
    alone_s = together_s = 0.0
    same = count = 0
    for index in range(min(args.scenes, len(source))):
        record = source[index]
        enc, _, _ = engine.encode_image(record.load_image())
        queries = [e.text for e in record.expressions]
        start = time.perf_counter()
        alone = [engine.answer_queries(enc, [q])[0] for q in queries]
        alone_s += time.perf_counter() - start
        start = time.perf_counter()
        together = engine.answer_queries(enc, queries)
        together_s += time.perf_counter() - start
        same += sum(a.ids == b.ids for a, b in zip(alone, together, strict=True))
        count += len(queries)
    n = min(args.scenes, len(source))
    print(f"{n} scenes, {count} expressions ({count / n:.1f} a scene)")
    print(f"(a) one at a time: {alone_s / n:.3f} s a scene")
    print(f"(b) together:      {together_s / n:.3f} s a scene")
    print(f"a/b: {alone_s / together_s:.2f}; same answer text: {same} of {count}")


if __name__ == "__main__":
    main()
