"""HungarianMatcher and SetCriterion on tiny cases whose answers are worked out by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from freqfusion_d2.modeling.criterion import SetCriterion, dice_loss, sigmoid_ce_loss
from freqfusion_d2.modeling.matcher import (
    HungarianMatcher,
    batch_dice_cost,
    batch_sigmoid_ce_cost,
)

LN2 = math.log(2.0)


def _probs_to_logits(rows):
    return torch.tensor(rows, dtype=torch.float32).log()


def _target(labels, masks):
    return {"labels": torch.tensor(labels, dtype=torch.int64), "masks": masks}


# ----------------------------------------------------------------------------- matcher


def test_pairwise_costs_hand_values():
    # Query 0: logits (0, 0) -> sigmoid (0.5, 0.5). Query 1: logits (ln 3, -ln 3) ->
    # sigmoid (0.75, 0.25). Target 0: (1, 0). Target 1: (0.5, 0.5) (a soft edge label).
    inputs = torch.tensor([[0.0, 0.0], [math.log(3), -math.log(3)]])
    targets = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    ce = batch_sigmoid_ce_cost(inputs, targets)
    dice = batch_dice_cost(inputs, targets)
    # BCE at logit 0 is ln 2 whatever the target: row 0 is (ln 2, ln 2).
    # Query 1 vs target 0: both points cost -ln 0.75.
    # Query 1 vs target 1: mean of 0.5 * (-ln .75) + 0.5 * (-ln .25) at each point
    #   = 0.5 * (-ln 0.75 - ln 0.25) = 0.5 * (0.287682 + 1.386294) = 0.836988.
    expected_ce = torch.tensor(
        [
            [LN2, LN2],
            [-math.log(0.75), 0.5 * (-math.log(0.75) - math.log(0.25))],
        ]
    )
    torch.testing.assert_close(ce, expected_ce)
    # Dice 1 - (2 * sum(s t) + 1) / (sum(s) + sum(t) + 1):
    #   q0, t0: 1 - (2 * 0.5 + 1) / (1 + 1 + 1) = 1/3
    #   q0, t1: 1 - (2 * 0.5 + 1) / (1 + 1 + 1) = 1/3
    #   q1, t0: 1 - (2 * 0.75 + 1) / (1 + 1 + 1) = 1/6
    #   q1, t1: 1 - (2 * 0.5 + 1) / (1 + 1 + 1) = 1/3
    expected_dice = torch.tensor([[1 / 3, 1 / 3], [1 / 6, 1 / 3]])
    torch.testing.assert_close(dice, expected_dice)


def test_pairwise_ce_cost_equals_per_pair_bce():
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(4, 7, generator=g)
    targets = torch.rand(3, 7, generator=g)
    ce = batch_sigmoid_ce_cost(inputs, targets)
    for q in range(4):
        for j in range(3):
            expected = F.binary_cross_entropy_with_logits(inputs[q], targets[j])
            torch.testing.assert_close(ce[q, j], expected)


def test_matcher_class_cost_only_hand_case():
    # p(q0) = (0.7, 0.2, 0.1), p(q1) = (0.1, 0.8, 0.1); targets have labels (1, 0).
    # C[q, j] = -p_q[y_j] = [[-0.2, -0.7], [-0.8, -0.1]].
    # q0->t1, q1->t0 costs -1.5 < -0.3 of the other assignment.
    logits = _probs_to_logits([[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]])
    outputs = {"pred_logits": logits, "pred_masks": torch.zeros(1, 2, 4, 4)}
    matcher = HungarianMatcher(cost_class=1.0, cost_mask=0.0, cost_dice=0.0, num_points=16)
    [(query_idx, target_idx)] = matcher(outputs, [_target([1, 0], torch.zeros(2, 8, 8))])
    assert query_idx.tolist() == [0, 1]
    assert target_idx.tolist() == [1, 0]
    assert query_idx.dtype == torch.int64 and target_idx.dtype == torch.int64


def test_matcher_mask_costs_pick_overlapping_masks():
    # Target 0 is the left half, target 1 the right half. Query 0 predicts the right half and
    # query 1 the left half, with equal class scores: only the mask costs decide.
    left = torch.zeros(8, 8)
    left[:, :4] = 1
    right = 1 - left
    pred = torch.stack([right, left])[None] * 20 - 10  # logits +-10
    outputs = {"pred_logits": torch.zeros(1, 2, 3), "pred_masks": pred}
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=64)
    torch.manual_seed(0)
    [(query_idx, target_idx)] = matcher(outputs, [_target([0, 1], torch.stack([left, right]))])
    assert query_idx.tolist() == [0, 1]
    assert target_idx.tolist() == [1, 0]


def test_matcher_more_queries_than_targets_and_empty_image():
    outputs = {"pred_logits": torch.randn(2, 5, 4), "pred_masks": torch.randn(2, 5, 6, 6)}
    targets = [
        _target([2], torch.ones(1, 12, 12)),
        _target([], torch.zeros(0, 12, 12)),
    ]
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=32)
    torch.manual_seed(3)
    (q0, t0), (q1, t1) = matcher(outputs, targets)
    after = torch.rand(1)
    assert len(q0) == 1 and t0.tolist() == [0]
    assert q1.numel() == 0 and t1.numel() == 0
    assert q1.dtype == torch.int64
    # One rand(1, P, 2) per image, the empty one included (as upstream's
    # HungarianMatcher.memory_efficient_forward).
    torch.manual_seed(3)
    torch.rand(1, 32, 2)
    torch.rand(1, 32, 2)
    assert torch.equal(after, torch.rand(1))


def test_matcher_rejects_bad_arguments():
    with pytest.raises(ValueError, match="cost_class"):
        HungarianMatcher(cost_class=0, cost_mask=0, cost_dice=0, num_points=4)
    with pytest.raises(ValueError, match="num_points"):
        HungarianMatcher(num_points=0)
    matcher = HungarianMatcher(num_points=4)
    outputs = {"pred_logits": torch.zeros(2, 3, 3), "pred_masks": torch.zeros(2, 3, 4, 4)}
    with pytest.raises(ValueError, match="targets"):
        matcher(outputs, [_target([0], torch.ones(1, 4, 4))])


# ----------------------------------------------------------------------------- criterion


def _criterion(num_classes=2, num_points=16, weight_dict=None, matcher=None, losses=None):
    matcher = matcher or HungarianMatcher(
        cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=num_points
    )
    weight_dict = weight_dict or {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    return SetCriterion(
        num_classes,
        matcher=matcher,
        weight_dict=weight_dict,
        eos_coef=0.1,
        losses=losses or ["labels", "masks"],
        num_points=num_points,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
    )


def test_empty_weight_buffer_is_persistent():
    criterion = _criterion(num_classes=3)
    assert torch.equal(criterion.empty_weight, torch.tensor([1.0, 1.0, 1.0, 0.1]))
    assert list(criterion.state_dict()) == ["empty_weight"]


def test_loss_ce_hand_case():
    # p(q0) = (1/4, 2/4, 1/4) and p(q1) = (1/3, 1/3, 1/3); one target of class 1.
    # Class-only matching: C = (-1/2, -1/3), so q0 gets the target.
    # q0 targets class 1: CE = -ln(1/2) = 0.693147, weight 1.
    # q1 targets "no object" (class 2): CE = -ln(1/3) = 1.098612, weight eos_coef = 0.1.
    # loss_ce = (0.693147 + 0.1 * 1.098612) / (1 + 0.1) = 0.730008.
    logits = torch.tensor([[[0.0, math.log(2), 0.0], [0.0, 0.0, 0.0]]])
    outputs = {"pred_logits": logits, "pred_masks": torch.zeros(1, 2, 4, 4)}
    matcher = HungarianMatcher(cost_class=1.0, cost_mask=0.0, cost_dice=0.0, num_points=16)
    criterion = _criterion(matcher=matcher, losses=["labels"])
    losses = criterion(outputs, [_target([1], torch.zeros(1, 8, 8))])
    assert set(losses) == {"loss_ce"}
    expected = (math.log(2) + 0.1 * math.log(3)) / 1.1
    assert losses["loss_ce"].item() == pytest.approx(expected, rel=1e-6)


def test_mask_losses_hand_case_and_num_masks_normaliser():
    # Mask logits are 0 everywhere, and the zero padding of point_sample is also logit 0, so
    # every sampled logit is 0 (sigmoid 0.5) wherever the points fall. Targets are all-zero
    # masks, so every point label is 0.
    # Per mask: BCE = ln 2 at each point, mean ln 2.
    # Per mask: dice = 1 - (0 + 1) / (16 * 0.5 + 0 + 1) = 1 - 1/9 = 8/9 with P = 16 points.
    # Two target masks in the batch -> num_masks = 2: loss = (2 * per-mask) / 2.
    outputs = {"pred_logits": torch.zeros(1, 3, 3), "pred_masks": torch.zeros(1, 3, 4, 4)}
    targets = [_target([0, 1], torch.zeros(2, 8, 8))]
    losses = _criterion(num_points=16)(outputs, targets)
    assert losses["loss_mask"].item() == pytest.approx(LN2, rel=1e-6)
    assert losses["loss_dice"].item() == pytest.approx(8 / 9, rel=1e-6)


def test_point_losses_formulas():
    # Two masks, two points each; num_masks = 4.
    # Mask 0: logits (0, 0), labels (1, 0): BCE mean ln 2; dice 1 - 2/3 = 1/3.
    # Mask 1: logits (ln 3, -ln 3), labels (1, 0): BCE mean -ln 0.75; dice 1 - 2.5/3 = 1/6.
    logits = torch.tensor([[0.0, 0.0], [math.log(3), -math.log(3)]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert sigmoid_ce_loss(logits, labels, 4.0).item() == pytest.approx(
        (LN2 - math.log(0.75)) / 4, rel=1e-6
    )
    assert dice_loss(logits, labels, 4.0).item() == pytest.approx((1 / 3 + 1 / 6) / 4, rel=1e-6)


def test_deep_supervision_keys_and_skipping_unweighted_aux():
    zeros = {"pred_logits": torch.zeros(1, 3, 3), "pred_masks": torch.zeros(1, 3, 4, 4)}
    outputs = dict(zeros, aux_outputs=[dict(zeros), dict(zeros)])
    targets = [_target([0], torch.zeros(1, 8, 8))]
    full_weights = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    for i in range(2):
        full_weights.update({f"loss_ce_{i}": 2.0, f"loss_mask_{i}": 5.0, f"loss_dice_{i}": 5.0})

    losses = _criterion(weight_dict=full_weights)(outputs, targets)
    assert set(losses) == set(full_weights)
    # Identical predictions and constant point values: every prediction has the same losses.
    for i in range(2):
        for key in ("loss_ce", "loss_mask", "loss_dice"):
            torch.testing.assert_close(losses[f"{key}_{i}"], losses[key])

    # Without aux weights (DEEP_SUPERVISION False) the aux predictions are not even matched.
    final_only = _criterion(weight_dict={"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0})
    assert set(final_only(outputs, targets)) == {"loss_ce", "loss_mask", "loss_dice"}
    # ... unless asked to compute them as upstream does.
    assert set(final_only(outputs, targets, aux_weight_check=False)) == set(full_weights)


def test_random_call_order_matches_upstream():
    # Upstream's order (mask2former/modeling/matcher.py, then SetCriterion.loss_masks in
    # criterion.py): for each output (final, then aux in order): one rand(1, P, 2) per image
    # in the matcher, then rand(R, int(P * k), 2) and rand(R, P - int(beta * P), 2).
    P, R = 16, 1  # one matched mask in the batch (the second image has no target)
    torch.manual_seed(1)
    pred = {"pred_logits": torch.randn(2, 4, 3), "pred_masks": torch.randn(2, 4, 5, 5)}
    outputs = dict(pred, aux_outputs=[{k: v + 1 for k, v in pred.items()}])
    targets = [_target([1], torch.ones(1, 10, 10)), _target([], torch.zeros(0, 10, 10))]
    weights = {"loss_ce": 1.0, "loss_mask": 1.0, "loss_dice": 1.0}
    weights.update({f"{k}_0": v for k, v in weights.items()})

    torch.manual_seed(7)
    _criterion(num_points=P, weight_dict=weights)(outputs, targets)
    after = torch.rand(1)

    torch.manual_seed(7)
    for _ in range(2):  # final, aux 0
        torch.rand(1, P, 2)
        torch.rand(1, P, 2)
        torch.rand(R, int(P * 3.0), 2)
        torch.rand(R, P - int(0.75 * P), 2)
    assert torch.equal(after, torch.rand(1))


def test_empty_targets_give_finite_losses_and_gradients():
    pred_logits = torch.randn(2, 4, 3, requires_grad=True)
    pred_masks = torch.randn(2, 4, 6, 6, requires_grad=True)
    targets = [_target([], torch.zeros(0, 12, 12)), _target([], torch.zeros(0, 12, 12))]
    losses = _criterion()({"pred_logits": pred_logits, "pred_masks": pred_masks}, targets)
    # No mask to score: the mask losses are exactly 0 (num_masks is clamped to 1).
    assert losses["loss_mask"].item() == 0.0 and losses["loss_dice"].item() == 0.0
    # Every query targets "no object": a plain (uniformly weighted) cross-entropy.
    expected_ce = F.cross_entropy(pred_logits.reshape(-1, 3), torch.full((8,), 2))
    torch.testing.assert_close(losses["loss_ce"], expected_ce)
    sum(losses.values()).backward()
    assert torch.isfinite(pred_logits.grad).all()
    assert pred_masks.grad is not None and torch.isfinite(pred_masks.grad).all()


def test_mask_loss_gradient_reaches_matched_masks_only():
    torch.manual_seed(0)
    pred_logits = torch.zeros(1, 3, 3)
    pred_logits[0, 1, 0] = 5.0  # query 1 is the clear match for the class-0 target
    pred_masks = torch.randn(1, 3, 6, 6, requires_grad=True)
    matcher = HungarianMatcher(cost_class=1.0, cost_mask=0.0, cost_dice=0.0, num_points=16)
    criterion = _criterion(matcher=matcher, losses=["masks"])
    target = torch.zeros(1, 12, 12)
    target[0, 3:9, 3:9] = 1
    losses = criterion(
        {"pred_logits": pred_logits, "pred_masks": pred_masks}, [_target([0], target)]
    )
    (losses["loss_mask"] + losses["loss_dice"]).backward()
    grad_norms = pred_masks.grad.flatten(2).norm(dim=-1)[0]
    assert grad_norms[1] > 0 and grad_norms[0] == 0 and grad_norms[2] == 0


def test_targets_of_different_sizes_are_padded():
    # Image 0's target is 8x8, image 1's is 6x10; padding with zeros adds only negatives.
    outputs = {"pred_logits": torch.zeros(2, 2, 3), "pred_masks": torch.zeros(2, 2, 4, 4)}
    targets = [_target([0], torch.zeros(1, 8, 8)), _target([1], torch.zeros(1, 6, 10))]
    losses = _criterion()(outputs, targets)
    # Same hand values as the all-zero case: ln 2 and 8/9 per mask, two masks, num_masks 2.
    assert losses["loss_mask"].item() == pytest.approx(LN2, rel=1e-6)
    assert losses["loss_dice"].item() == pytest.approx(8 / 9, rel=1e-6)


def test_criterion_rejects_bad_arguments():
    with pytest.raises(ValueError, match="losses"):
        _criterion(losses=["labels", "boxes"])
    matcher = HungarianMatcher(num_points=4)
    kwargs = dict(num_classes=2, matcher=matcher, weight_dict={}, eos_coef=0.1, losses=["labels"])
    with pytest.raises(ValueError, match="oversample_ratio"):
        SetCriterion(**kwargs, num_points=4, oversample_ratio=0.5, importance_sample_ratio=0.5)
    with pytest.raises(ValueError, match="importance_sample_ratio"):
        SetCriterion(**kwargs, num_points=4, oversample_ratio=3.0, importance_sample_ratio=1.5)


def test_bfloat16_predictions_under_cpu_autocast():
    # Under autocast the decoder emits bfloat16 logits and masks; the matching costs and the
    # losses are still computed in float32.
    torch.manual_seed(0)
    left = torch.zeros(8, 8)
    left[:, :4] = 1
    right = 1 - left
    pred_masks = (torch.stack([right, left])[None] * 20 - 10).bfloat16().requires_grad_()
    pred_logits = torch.zeros(1, 2, 3, dtype=torch.bfloat16, requires_grad=True)
    targets = [_target([0, 1], torch.stack([left, right]))]
    criterion = _criterion(num_points=64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        [(query_idx, target_idx)] = criterion.matcher(
            {"pred_logits": pred_logits, "pred_masks": pred_masks}, targets
        )
        losses = criterion({"pred_logits": pred_logits, "pred_masks": pred_masks}, targets)
    assert query_idx.tolist() == [0, 1] and target_idx.tolist() == [1, 0]
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert pred_masks.grad.dtype == torch.bfloat16
