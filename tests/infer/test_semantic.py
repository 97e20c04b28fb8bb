"""The semantic label map (`infer/semantic.py`) agrees with the masks: a pixel is labelled only inside its mask."""

import torch

from lasagna.infer.semantic import UNLABELLED, merge_semantic


def test_a_logit_of_exactly_zero_is_outside_the_mask_and_unlabelled():
    logits = torch.tensor([[[0.0, 1.0, -1.0]], [[-2.0, -3.0, 0.5]]])  # (K=2, H=1, W=3)
    masks = logits > 0  # as the engine cuts masks
    for scores in (None, torch.tensor([0.9, 0.6])):
        labels = merge_semantic(logits, torch.tensor([4, 7]), scores=scores)
        assert labels.tolist() == [[UNLABELLED, 4, 7]]
        for k, cls in enumerate((4, 7)):
            assert not ((labels == cls) & ~masks[k]).any()
