import math

import pytest
import torch
import torch.nn.functional as F

from lasagna.losses import LossConfig, lasagna_loss, mask_dice_sum, place_ce, token_ce
from lasagna.tokens import IGNORE_INDEX, IMAGE_TOKEN_ID


def test_empty_masks_give_zero_mask_losses_not_nan():
    logits = torch.zeros(1, 4, 8)
    labels = torch.tensor([[IGNORE_INDEX, 1, 2, IGNORE_INDEX]])
    parts = lasagna_loss(logits, labels, [torch.zeros(0, 5, 5)], [torch.zeros(0, 5, 5)])
    assert parts.bce.item() == 0.0 and parts.dice.item() == 0.0 and parts.num_masks == 0
    assert math.isclose(parts.ce.item(), math.log(8), rel_tol=1e-6)  # uniform logits over 8 tokens
    assert math.isclose(parts.total.item(), math.log(8), rel_tol=1e-6)


def test_no_supervised_tokens_gives_zero_ce():
    ce = token_ce(torch.randn(1, 3, 5), torch.full((1, 3), IGNORE_INDEX))
    assert ce.item() == 0.0


def test_bce_and_dice_hand_values():
    # logits 0 -> p = 0.5: BCE = ln 2 for every pixel; 2 masks
    pred = [torch.zeros(2, 2, 2)]
    gt = [torch.tensor([[[1.0, 0], [0, 0]], [[1.0, 1], [1, 1]]])]
    parts = lasagna_loss(torch.zeros(1, 2, 3), torch.full((1, 2), IGNORE_INDEX), pred, gt, cfg=LossConfig())
    assert math.isclose(parts.bce.item(), math.log(2), rel_tol=1e-6)
    # dice mask 1: I=0.5, P=2, T=1 -> 1 - (1/1000 + e)/(3/1000 + e); mask 2: I=2, P=2, T=4 -> 1 - (4/1000+e)/(6/1000+e)
    e = 1e-6
    d1 = 1 - (1 / 1000 + e) / (3 / 1000 + e)
    d2 = 1 - (4 / 1000 + e) / (6 / 1000 + e)
    assert math.isclose(parts.dice.item(), (d1 + d2) / 2, rel_tol=1e-5)
    assert math.isclose(parts.total.item(), 2 * math.log(2) + 0.5 * (d1 + d2) / 2, rel_tol=1e-5)


def test_perfect_masks_have_near_zero_dice_and_ignore_pixels_are_left_out():
    gt = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    logits = (gt * 2 - 1) * 50
    assert mask_dice_sum(logits, gt, None).item() < 1e-3
    # a wrong pixel under the ignore mask does not count
    bad = logits.clone()
    bad[0, 0, 1] = 50
    ignore = torch.tensor([[False, True], [False, False]])
    parts = lasagna_loss(torch.zeros(1, 2, 3), torch.full((1, 2), IGNORE_INDEX), [bad], [gt], ignore=[ignore])
    assert parts.bce.item() < 1e-6 and parts.dice.item() < 1e-3


def test_mismatched_mask_count_is_a_clear_error():
    with pytest.raises(ValueError, match="k-th <ins>"):
        lasagna_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2).long(), [torch.zeros(2, 4, 4)], [torch.zeros(1, 4, 4)])


def test_decision_weight_is_a_weighted_mean_and_1_is_the_plain_mean():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6)
    labels = torch.tensor([[IGNORE_INDEX, 1, 4, 2, 5], [IGNORE_INDEX, 4, 3, IGNORE_INDEX, IGNORE_INDEX]])
    per_token = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 6), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    )
    flat = labels[:, 1:].reshape(-1)
    kept = flat != IGNORE_INDEX
    w = torch.where((flat == 4) | (flat == 5), 3.0, 1.0)[kept]
    expected = (per_token[kept] * w).sum() / w.sum()
    assert torch.allclose(token_ce(logits, labels, (4, 5), 3.0), expected)
    assert torch.allclose(token_ce(logits, labels, (4, 5), 1.0), token_ce(logits, labels))
    assert torch.allclose(token_ce(logits, labels), per_token[kept].mean())


def test_decision_weight_without_ids_is_refused():
    with pytest.raises(ValueError, match="decision_ids"):
        lasagna_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2).long(), [], [], cfg=LossConfig(decision_weight=2.0))


def _place_batch(pointing_at: int, with_cls: bool = True):
    """One row: [CLS] + a 2x2 grid of image tokens, then a slot before <ins>; each cell's state a one-hot."""
    ins, dim, skip = 7, 8, int(with_cls)
    ids = torch.tensor([[IMAGE_TOKEN_ID] * (skip + 4) + [5, 6, ins]])
    hidden = torch.zeros(1, ids.shape[1], dim)
    for cell in range(4):
        hidden[0, skip + cell, cell] = 1.0
    hidden[0, -2, pointing_at] = 20.0  # the state before <ins>
    return hidden, ids, ins, skip


def test_place_ce_is_low_where_the_slot_points_at_its_target_and_skips_empty_masks():
    target = torch.zeros(1, 4, 4, dtype=torch.bool)
    target[0, 2:, 2:] = True  # the bottom-right cell of a 2x2 grid
    losses = {}
    for cell in range(4):
        hidden, ids, ins, skip = _place_batch(cell)
        losses[cell] = place_ce(hidden, ids, ins, torch.tensor([0]), [target], grid=2, skip=skip).item()
    assert losses[3] < 0.01 and min(losses[0], losses[1], losses[2]) > 1.0
    hidden, ids, ins, skip = _place_batch(3, with_cls=False)
    assert place_ce(hidden, ids, ins, torch.tensor([0]), [target], grid=2, skip=0).item() < 0.01
    cells = torch.eye(8)[[3, 2, 1, 0]]  # a code per cell, pointed at instead of the image tokens: cell 3 is dim 0
    assert place_ce(hidden, ids, ins, torch.tensor([0]), [target], grid=2, skip=0, cells=cells).item() > 1.0
    hidden[0, -2] = 20.0 * cells[3]
    assert place_ce(hidden, ids, ins, torch.tensor([0]), [target], grid=2, skip=0, cells=cells).item() < 0.01
    empty = place_ce(hidden, ids, ins, torch.tensor([0]), [torch.zeros(1, 4, 4)], grid=2, skip=0)
    assert empty.item() == 0.0
    with pytest.raises(ValueError, match="image tokens"):
        place_ce(hidden, ids, ins, torch.tensor([0]), [target], grid=3, skip=0)
    with pytest.raises(ValueError, match="place_against"):
        LossConfig(place_against="where")
    with pytest.raises(ValueError, match="place_weight"):
        lasagna_loss(torch.zeros(1, 2, 3), torch.full((1, 2), IGNORE_INDEX), [], [], cfg=LossConfig(place_weight=1.0))
    parts = lasagna_loss(
        torch.zeros(1, 2, 3),
        torch.full((1, 2), IGNORE_INDEX),
        [],
        [],
        cfg=LossConfig(place_weight=0.5),
        place=torch.tensor(2.0),
    )
    assert parts.total.item() == 1.0 and parts.place.item() == 2.0


def test_place_ce_pairs_each_slot_with_its_images_masks_in_order():
    """Rows 0 and 1 show image 0, row 2 image 1; row 1 holds two slots. Each slot points at one cell of a 2x2 grid."""
    ins, dim = 7, 4
    ids = torch.tensor([[IMAGE_TOKEN_ID] * 4 + [5, ins, 6, 6]] * 3)
    ids[1, 6:] = torch.tensor([5, ins])
    hidden = torch.zeros(3, ids.shape[1], dim)
    hidden[:, :4] = torch.eye(dim)  # image token of cell c: one-hot c
    slots = [(0, 4, 2), (1, 4, 1), (1, 6, 0), (2, 4, 3)]  # (row, position before <ins>, cell it points at)
    for row, pos, cell in slots:
        hidden[row, pos, cell] = 20.0

    def masks(*cells):
        out = torch.zeros(len(cells), 4, 4, dtype=torch.bool)
        for k, c in enumerate(cells):
            out[k, 2 * (c // 2) : 2 * (c // 2) + 2, 2 * (c % 2) : 2 * (c % 2) + 2] = True
        return out

    image_index = torch.tensor([0, 0, 1])
    right = place_ce(hidden, ids, ins, image_index, [masks(2, 1, 0), masks(3)], grid=2, skip=0)
    swapped = place_ce(hidden, ids, ins, image_index, [masks(2, 0, 1), masks(3)], grid=2, skip=0)
    assert right.item() < 0.01 and swapped.item() > 0.4 * 20 / dim**0.5  # half of the slots point elsewhere
    with pytest.raises(ValueError, match="more <ins> slots"):
        place_ce(hidden, ids, ins, image_index, [masks(2, 1), masks(3)], grid=2, skip=0)
    with pytest.raises(ValueError, match="fewer <ins> slots"):
        place_ce(hidden, ids, ins, image_index, [masks(2, 1, 0), masks(3, 0)], grid=2, skip=0)
    hidden.requires_grad_(True)
    empty = torch.zeros(3, 4, 4, dtype=torch.bool), torch.zeros(1, 4, 4, dtype=torch.bool)
    nothing = place_ce(hidden, ids, ins, image_index, list(empty), grid=2, skip=0)
    nothing.backward()  # masks without a pixel: 0, and still a graph to backpropagate through
    assert nothing.item() == 0.0 and hidden.grad is not None


def test_an_untrained_verifier_leaves_the_decision_to_the_llm_and_learns_by_the_matchs_bce():
    from lasagna.judges.presence import PresenceVerifier

    verifier = PresenceVerifier(region_dim=6, name_dim=4)
    llm = torch.tensor([2.0, -1.0, 0.3])
    regions, names = torch.randn(3, 7), torch.randn(3, 4)
    torch.testing.assert_close(verifier.fuse(llm, verifier.match(regions, names)), llm)
    present = torch.tensor([True, False, False])
    expected = F.binary_cross_entropy_with_logits(verifier.match(regions, names), present.float())
    torch.testing.assert_close(verifier.loss(regions, names, present), expected)
    assert verifier.loss(regions[:0], names[:0], present[:0]).item() == 0.0


def test_the_fusion_fit_trusts_the_opinion_that_separates_and_weighs_both_errors_alike():
    from lasagna.judges.calibrate import fit_fusion

    g = torch.Generator().manual_seed(0)
    present = torch.rand(2000, generator=g) < 0.1  # a full list: mostly absent classes
    signal = torch.where(present, 2.0, -2.0) + torch.randn(2000, generator=g)
    noise = torch.randn(2000, generator=g) * 3
    weight, bias = fit_fusion(torch.stack([noise, signal], 1), present)
    assert weight[0, 1] > 5 * weight[0, 0].abs()
    decided = (torch.stack([noise, signal], 1) @ weight.T + bias)[:, 0] >= 0
    recall, rejection = decided[present].float().mean(), (~decided[~present]).float().mean()
    assert recall > 0.95 and rejection > 0.95 and abs(recall - rejection) < 0.04
    with pytest.raises(ValueError, match="present and absent"):
        fit_fusion(torch.zeros(5, 2), torch.zeros(5, dtype=torch.bool))


def test_weighing_the_absent_kind_more_moves_the_fusion_towards_rejection():
    from lasagna.judges.calibrate import decision_rates, fit_fusion

    g = torch.Generator().manual_seed(0)
    present = torch.rand(4000, generator=g) < 0.1
    evidence = torch.stack([torch.randn(4000, generator=g), torch.where(present, 1.5, -1.5)], 1)
    evidence[:, 1] += torch.randn(4000, generator=g)
    rates = [decision_rates(evidence, present, *fit_fusion(evidence, present, w)) for w in (0.5, 1.0, 3.0)]
    recall = [r["present_recall"] for r in rates]
    rejection = [r["absent_rejection"] for r in rates]
    assert recall[0] > recall[1] > recall[2] and rejection[0] < rejection[1] < rejection[2]
    with pytest.raises(ValueError, match="absent_weight must be positive, got 0"):
        fit_fusion(evidence, present, 0)
