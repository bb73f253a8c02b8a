"""Hungarian matching between Mask2Former's query predictions and the ground-truth masks.

Upstream: ``HungarianMatcher.memory_efficient_forward`` in ``mask2former/modeling/matcher.py``
of github.com/facebookresearch/Mask2Former. For every image the cost of assigning query q to
target j is

    C[q, j] = cost_mask * BCE(q, j) + cost_class * (-p_q[y_j]) + cost_dice * Dice(q, j)

where p_q is the softmax over the K + 1 class logits and the two mask costs are computed on one
set of ``num_points`` uniformly random points shared by all queries and targets of the image.
The assignment minimising the total cost is found with ``scipy.optimize.linear_sum_assignment``.
"""

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from .point_sample import point_sample

__all__ = ["HungarianMatcher", "batch_sigmoid_ce_cost", "batch_dice_cost"]


def batch_sigmoid_ce_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise mean sigmoid binary cross-entropy between predictions and targets.

    Args:
        inputs: (Q, P) mask logits at P points.
        targets: (N, P) target values in [0, 1] at the same points (soft at mask edges).

    Returns:
        (Q, N) tensor; entry [q, j] is the mean over points of
        BCE-with-logits(inputs[q], targets[j]).
    """
    num_points = inputs.shape[1]
    # BCE(x, t) = t * BCE(x, 1) + (1 - t) * BCE(x, 0) is linear in t, so all pairs come from two
    # matrix products instead of a (Q, N, P) tensor.
    loss_if_one = F.binary_cross_entropy_with_logits(
        inputs, torch.ones_like(inputs), reduction="none"
    )
    loss_if_zero = F.binary_cross_entropy_with_logits(
        inputs, torch.zeros_like(inputs), reduction="none"
    )
    cost = torch.einsum("qp,np->qn", loss_if_one, targets) + torch.einsum(
        "qp,np->qn", loss_if_zero, 1 - targets
    )
    return cost / num_points


def batch_dice_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise soft dice cost (with +1 smoothing) between predictions and targets.

    Args:
        inputs: (Q, P) mask logits at P points.
        targets: (N, P) target values in [0, 1] at the same points.

    Returns:
        (Q, N) tensor; entry [q, j] is 1 - (2 * sum(s * t) + 1) / (sum(s) + sum(t) + 1) with
        s = sigmoid(inputs[q]) and t = targets[j].
    """
    probs = inputs.sigmoid()
    numerator = 2 * torch.einsum("qp,np->qn", probs, targets)
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher(nn.Module):
    """One-to-one assignment of predictions to targets, one image at a time.

    Queries left unassigned are later trained towards the "no object" class. Since the matching
    is a bipartite assignment, an image with N targets and Q >= N queries gets exactly N pairs.
    """

    def __init__(
        self,
        cost_class: float = 1.0,
        cost_mask: float = 1.0,
        cost_dice: float = 1.0,
        num_points: int = 112 * 112,
    ):
        """
        Args:
            cost_class: weight of the classification cost (-probability of the target class).
            cost_mask: weight of the point-sampled sigmoid cross-entropy cost.
            cost_dice: weight of the point-sampled dice cost.
            num_points: number of random points on which the mask costs are evaluated.
        """
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("cost_class, cost_mask, cost_dice: at least one must be non-zero")
        if num_points <= 0:
            raise ValueError(f"num_points: expected a positive number of points, got {num_points}")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def forward(
        self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]]
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Matches each image's queries to its targets.

        Args:
            outputs: ``"pred_logits"`` (B, Q, K + 1) and ``"pred_masks"`` (B, Q, H, W) logits.
            targets: B dicts with ``"labels"`` (N_b,) int64 in [0, K) and ``"masks"``
                (N_b, H_b, W_b) binary masks (any size; sampled in normalized coordinates).

        Returns:
            B pairs ``(query_idx, target_idx)`` of int64 CPU tensors of length min(Q, N_b);
            ``query_idx`` is ascending.
        """
        pred_logits = outputs["pred_logits"]
        pred_masks = outputs["pred_masks"]
        if len(targets) != pred_logits.shape[0]:
            raise ValueError(
                f"targets: expected one dict per image ({pred_logits.shape[0]}), got {len(targets)}"
            )
        indices = []
        for b, target in enumerate(targets):
            cost = self._cost_matrix(pred_logits[b], pred_masks[b], target)
            query_idx, target_idx = linear_sum_assignment(cost.cpu())
            indices.append(
                (
                    torch.as_tensor(query_idx, dtype=torch.int64),
                    torch.as_tensor(target_idx, dtype=torch.int64),
                )
            )
        return indices

    def _cost_matrix(
        self, logits: torch.Tensor, masks: torch.Tensor, target: Dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """(Q, N_b) matching cost of one image."""
        labels = target["labels"]
        # No "1 -": the constant does not change the assignment.
        cost_class = -logits.softmax(-1)[:, labels]

        # One point set per image, drawn even when the image has no target, so that the random
        # stream does not depend on the annotations.
        coords = torch.rand(1, self.num_points, 2, device=masks.device)
        pred_points = point_sample(
            masks[:, None], coords.repeat(masks.shape[0], 1, 1), align_corners=False
        ).squeeze(1)
        target_masks = target["masks"].to(masks)[:, None]
        target_points = point_sample(
            target_masks, coords.repeat(target_masks.shape[0], 1, 1), align_corners=False
        ).squeeze(1)

        # The costs are accumulated in float32 whatever autocast region the model runs in.
        with torch.autocast(device_type=masks.device.type, enabled=False):
            pred_points = pred_points.float()
            target_points = target_points.float()
            cost_mask = batch_sigmoid_ce_cost(pred_points, target_points)
            cost_dice = batch_dice_cost(pred_points, target_points)
        cost = (
            self.cost_mask * cost_mask
            + self.cost_class * cost_class.float()
            + self.cost_dice * cost_dice
        )
        return cost.reshape(logits.shape[0], -1)

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
            f"cost_dice={self.cost_dice}, num_points={self.num_points}"
        )
