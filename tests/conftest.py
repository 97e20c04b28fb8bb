from __future__ import annotations

import pytest
import torch

from lasagna.config import preset
from lasagna.model.lasagna import LasagnaModel

TINY_CORPUS = [
    "wall, bed, sky, red circle, blue square, green star, tree, floor, person",
    "Segment this image. Please segment the objects.",
    "A chat between a curious human and an artificial intelligence assistant.",
]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from lasagna.tokenization import build_plain_tokenizer

    return build_plain_tokenizer(TINY_CORPUS * 4, vocab_size=300)


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    model = LasagnaModel(preset("tiny"))
    model.set_token_ids(ins_id=10, pad_id=0)
    return model
