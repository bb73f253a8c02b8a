"""Mask2Former's set-prediction loss.

Upstream: ``SetCriterion`` in ``mask2former/modeling/criterion.py`` and the loss weights of
``MaskFormer.from_config`` in ``mask2former/maskformer_model.py``
(github.com/facebookresearch/Mask2Former; Cheng et al., CVPR 2022, section 3.3).

After Hungarian matching, three losses are computed for the final prediction and, with deep
supervision, for every intermediate prediction of the transformer decoder (each matched again):

* ``loss_ce``: class cross-entropy over all queries; unmatched queries target the "no object"
  class K, whose weight is ``eos_coef``. A weighted mean, not divided by the number of masks.
* ``loss_mask``: sigmoid binary cross-entropy of the matched masks, evaluated on ``num_points``
  points per mask chosen by uncertainty (PointRend importance sampling), summed over masks and
  divided by the number of target masks in the batch (averaged over workers).
* ``loss_dice``: dice loss on the same points, normalised the same way.
"""

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.utils.comm import get_world_size
from torch import nn

from .point_sample import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
)

__all__ = ["SetCriterion", "dice_loss", "sigmoid_ce_loss"]

# Loss name (as listed in ``losses``) -> the keys it produces.
_LOSS_KEYS = {"labels": ("loss_ce",), "masks": ("loss_mask", "loss_dice")}


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Soft dice loss with +1 smoothing, summed over masks and divided by ``num_masks``.

    Args:
        inputs: (R, P) mask logits.
        targets: (R, P) target values in [0, 1].
        num_masks: normaliser.
    """
    probs = inputs.sigmoid().flatten(1)
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    loss = 1 - (numerator + 1) / (denominator + 1)
    return loss.sum() / num_masks


def sigmoid_ce_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Per-mask mean of BCE-with-logits, summed over masks and divided by ``num_masks``.

    Args:
        inputs: (R, P) mask logits.
        targets: (R, P) target values in [0, 1].
        num_masks: normaliser.
    """
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def _gather_target_masks(
    targets: List[Dict[str, torch.Tensor]], indices: List[Tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """Matched target masks in (batch, matcher) order, zero-padded to a common size."""
    height = max(t["masks"].shape[-2] for t in targets)
    width = max(t["masks"].shape[-1] for t in targets)
    gathered = []
    for target, (_, target_idx) in zip(targets, indices):
        masks = target["masks"][target_idx.to(target["masks"].device)]
        pad = (0, width - masks.shape[-1], 0, height - masks.shape[-2])
        if any(pad):
            masks = F.pad(masks, pad)
        gathered.append(masks)
    return torch.cat(gathered)


class SetCriterion(nn.Module):
    """Hungarian-matched classification and point-sampled mask losses, with deep supervision.

    The module holds the persistent buffer ``empty_weight`` (per-class CE weights, the last one
    being ``eos_coef``), which is part of upstream checkpoints as ``criterion.empty_weight``.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module,
        weight_dict: Dict[str, float],
        eos_coef: float,
        losses: Sequence[str],
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
        mask_point_sampler: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
    ):
        """
        Args:
            num_classes: number of object classes K, without the "no object" class.
            matcher: callable ``(outputs, targets) -> [(query_idx, target_idx)] * B``, usually
                a :class:`HungarianMatcher`.
            weight_dict: loss key -> weight. Only used here to skip the matching of intermediate
                predictions whose losses have no weight (the model applies the weights).
            eos_coef: classification weight of the "no object" class.
            losses: subset of ``["labels", "masks"]``.
            num_points: points per mask for the mask losses.
            oversample_ratio: candidate points per kept point (>= 1) for importance sampling.
            importance_sample_ratio: fraction of the points chosen by uncertainty, in [0, 1].
            mask_point_sampler: ``(masks (N, 1, H, W), coords (N, P, 2)) -> (N, 1, P)`` that
                reads the predicted mask logits at the loss points (e.g. the ``point_sample``
                of the model's MSAU, so the losses see the upsampler the model uses); None:
                bilinear ``point_sample``. The target masks are always read bilinearly.
        """
        super().__init__()
        unknown = [loss for loss in losses if loss not in _LOSS_KEYS]
        if unknown:
            raise ValueError(f"losses: unknown {unknown}; expected names in {list(_LOSS_KEYS)}")
        if num_points <= 0:
            raise ValueError(f"num_points: expected a positive number, got {num_points}")
        if oversample_ratio < 1:
            raise ValueError(f"oversample_ratio: expected >= 1, got {oversample_ratio}")
        if not 0 <= importance_sample_ratio <= 1:
            raise ValueError(
                "importance_sample_ratio: expected a value in [0, 1], "
                f"got {importance_sample_ratio}"
            )
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        self.losses = list(losses)
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.mask_point_sampler = mask_point_sampler

    def loss_labels(
        self,
        outputs: Dict[str, torch.Tensor],
        targets: List[Dict[str, torch.Tensor]],
        indices: List[Tuple[torch.Tensor, torch.Tensor]],
        num_masks: float,
    ) -> Dict[str, torch.Tensor]:
        """Weighted cross-entropy over all queries (``num_masks`` is not used)."""
        logits = outputs["pred_logits"].float()
        batch_idx, query_idx = self._prediction_index(indices)
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        matched_labels = [
            t["labels"][j.to(t["labels"].device)] for t, (_, j) in zip(targets, indices)
        ]
        target_classes[batch_idx, query_idx] = torch.cat(matched_labels).to(logits.device)
        loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight)
        return {"loss_ce": loss_ce}

    def loss_masks(
        self,
        outputs: Dict[str, torch.Tensor],
        targets: List[Dict[str, torch.Tensor]],
        indices: List[Tuple[torch.Tensor, torch.Tensor]],
        num_masks: float,
    ) -> Dict[str, torch.Tensor]:
        """Point-sampled BCE and dice losses of the matched masks."""
        batch_idx, query_idx = self._prediction_index(indices)
        pred_masks = outputs["pred_masks"][batch_idx, query_idx][:, None]
        target_masks = _gather_target_masks(targets, indices).to(pred_masks)[:, None]

        with torch.no_grad():
            coords = get_uncertain_point_coords_with_randomness(
                pred_masks,
                calculate_uncertainty,
                self.num_points,
                self.oversample_ratio,
                self.importance_sample_ratio,
            )
            # Bilinear sampling gives soft labels at mask edges; they are used as they are.
            point_labels = point_sample(target_masks, coords, align_corners=False).squeeze(1)
        if self.mask_point_sampler is None:
            point_logits = point_sample(pred_masks, coords, align_corners=False).squeeze(1)
        else:
            point_logits = self.mask_point_sampler(pred_masks, coords).squeeze(1)
        return {
            "loss_mask": sigmoid_ce_loss(point_logits, point_labels, num_masks),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks),
        }

    @staticmethod
    def _prediction_index(
        indices: List[Tuple[torch.Tensor, torch.Tensor]],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        query_idx = torch.cat([src for src, _ in indices])
        return batch_idx, query_idx

    def get_loss(self, loss, outputs, targets, indices, num_masks) -> Dict[str, torch.Tensor]:
        """Computes the loss called ``loss`` ("labels" or "masks")."""
        if loss == "labels":
            return self.loss_labels(outputs, targets, indices, num_masks)
        if loss == "masks":
            return self.loss_masks(outputs, targets, indices, num_masks)
        raise ValueError(f"loss: unknown {loss!r}; expected one of {list(_LOSS_KEYS)}")

    def _num_masks(self, targets: List[Dict[str, torch.Tensor]], device: torch.device) -> float:
        """Average number of target masks per worker, at least 1."""
        num_masks = torch.as_tensor(
            [float(sum(len(t["labels"]) for t in targets))], dtype=torch.float, device=device
        )
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_masks)
        return torch.clamp(num_masks / get_world_size(), min=1).item()

    def _has_weight(self, suffix: str) -> bool:
        keys = [key + suffix for loss in self.losses for key in _LOSS_KEYS[loss]]
        return any(key in self.weight_dict for key in keys)

    def forward(
        self,
        outputs: Dict[str, object],
        targets: List[Dict[str, torch.Tensor]],
        aux_weight_check: Optional[bool] = True,
    ) -> Dict[str, torch.Tensor]:
        """Computes all losses.

        Args:
            outputs: ``"pred_logits"`` (B, Q, K + 1), ``"pred_masks"`` (B, Q, H, W) and optionally
                ``"aux_outputs"``, a list of dicts with the same two keys.
            targets: B dicts with ``"labels"`` (N_b,) int64 and ``"masks"`` (N_b, H, W).
            aux_weight_check: if True, intermediate predictions none of whose suffixed loss keys
                appear in ``weight_dict`` are neither matched nor scored (the model would drop
                those losses anyway). If False, they are always computed, as upstream does.

        Returns:
            ``loss_ce``, ``loss_mask``, ``loss_dice`` for the final prediction and the same keys
            with suffix ``_{i}`` for intermediate prediction i; unweighted.
        """
        final = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        indices = self.matcher(final, targets)
        num_masks = self._num_masks(targets, outputs["pred_logits"].device)

        losses = {}
        for loss in self.losses:
            losses.update(self.get_loss(loss, final, targets, indices, num_masks))

        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            if aux_weight_check and not self._has_weight(f"_{i}"):
                continue
            aux_indices = self.matcher(aux, targets)
            for loss in self.losses:
                aux_losses = self.get_loss(loss, aux, targets, aux_indices, num_masks)
                losses.update({f"{k}_{i}": v for k, v in aux_losses.items()})
        return losses

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, eos_coef={self.eos_coef}, losses={self.losses}, "
            f"num_points={self.num_points}, oversample_ratio={self.oversample_ratio}, "
            f"importance_sample_ratio={self.importance_sample_ratio}"
        )
