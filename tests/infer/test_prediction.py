"""`Prediction.semantic_map` (`infer/prediction.py`) with a class list of the caller's."""

import numpy as np
import pytest
import torch

from lasagna.infer.prediction import ClassResult, Prediction


def _pred() -> Prediction:
    logits = torch.tensor([[[3.0, -1.0]], [[-1.0, 2.0]]])  # (present classes, H=1, W=2)
    classes = [
        ClassResult("sky", True, 0.9, np.array([[True, False]])),
        ClassResult("red circle", False, 0.1),
        ClassResult("grass", True, 0.8, np.array([[False, True]])),
    ]
    return Prediction(image_size=(1, 2), classes=classes, logits=logits)


def test_the_map_indexes_the_list_it_is_given():
    assert _pred().semantic_map().tolist() == [[0, 2]]
    assert _pred().semantic_map(["grass", "sky"]).tolist() == [[1, 0]]


def test_a_list_without_a_present_class_is_named():
    with pytest.raises(ValueError, match=r"\['sky'\].*present") as info:
        _pred().semantic_map(["grass", "red circle"])
    assert not isinstance(info.value, KeyError)
