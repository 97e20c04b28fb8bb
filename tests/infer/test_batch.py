"""infer/batch.py: several (image, class list) pairs in one batch give the Predictions they get one at a time.

In float32 they agree to rounding (scores within 1e-4; measured 3e-7). The embedded model's weights are bfloat16,
where any change of batch shape moves a score by up to about 1e-3: the engine alone does that too when a class's
chunk runs beside other chunks (measured 9e-4, docs/serving.md). So the strict comparison runs the model in float32
and the bfloat16 one checks the answers with that noise allowed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lasagna.api import Lasagna, to_rgb
from lasagna.infer.batch import _groups, segment_batch
from lasagna.shapeworld import vocab

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def embedded() -> Lasagna:
    return Lasagna.from_pretrained(dtype=torch.float32)


def assert_same(batched, alone, score_tolerance: float = 1e-4) -> None:
    """Same present sets, masks equal or IoU > 0.99, scores within `score_tolerance`."""
    assert batched.present == alone.present
    assert batched.text == alone.text
    for b, a in zip(batched.classes, alone.classes, strict=True):
        assert (b.name, b.answered) == (a.name, a.answered)
        assert b.score == pytest.approx(a.score, abs=score_tolerance)
        if a.mask is not None:
            union = (a.mask | b.mask).sum()
            assert union == 0 or (a.mask & b.mask).sum() / union > 0.99, a.name


@pytest.mark.parametrize("decoder", ["template", "free"])
def test_a_batch_equals_one_image_at_a_time(embedded, decoder):
    images = [to_rgb(EXAMPLES / n) for n in ("shapes.png", "shapeworld-test-0.png", "shapeworld-test-1.png")]
    images[2] = np.ascontiguousarray(images[2][:, 16:])  # another size: pairs need not match
    names = list(vocab.classes("test"))
    lists = [names[:9], names[6:9] + names[30:34], ["sky", "grass", "red circle"]]
    sizes = [4, 16, 2]
    batched = segment_batch(embedded.engine, images, lists, sizes, decoder)
    for image, classes, size, pred in zip(images, lists, sizes, batched, strict=True):
        assert_same(pred, embedded.engine.segment_classes(image, classes, size, decoder))
    assert any(p.present for p in batched) and any(p.absent for p in batched)


def test_bfloat16_batches_give_the_same_answers():
    model = Lasagna.from_pretrained()
    assert next(model.model.parameters()).dtype == torch.bfloat16
    images = [to_rgb(EXAMPLES / n) for n in ("shapes.png", "shapeworld-test-0.png")]
    lists = [list(vocab.classes("test"))[:8], ["sky", "grass", "wood", "orange cross"]]
    for image, classes, pred in zip(images, lists, segment_batch(model.engine, images, lists, 4), strict=True):
        assert_same(pred, model.engine.segment_classes(image, classes, 4), score_tolerance=5e-3)


def test_images_past_max_rows_go_to_the_next_batch(embedded):
    image = to_rgb(EXAMPLES / "shapes.png")
    lists = [["sky", "grass"], ["orange cross"], ["cyan star", "sky"]]
    batched = segment_batch(embedded.engine, [image] * 3, lists, chunk_size=1, max_rows=2)
    for classes, pred in zip(lists, batched, strict=True):
        assert_same(pred, embedded.engine.segment_classes(image, classes, chunk_size=1))
    assert _groups([3, 1, 2], max_rows=3) == [[0], [1, 2]]
    assert _groups([5, 1], max_rows=3) == [[0], [1]]


def test_bad_input_is_refused_with_a_clear_error(embedded):
    image = to_rgb(EXAMPLES / "shapes.png")
    with pytest.raises(ValueError, match="one list per image"):
        segment_batch(embedded.engine, [image, image], [["sky"]])
    with pytest.raises(ValueError, match="listed twice"):
        segment_batch(embedded.engine, [image, image], [["sky"], ["sky", "sky"]])
    with pytest.raises(ValueError, match="chunk_size"):
        segment_batch(embedded.engine, [image], [["sky"]], chunk_size=0)
