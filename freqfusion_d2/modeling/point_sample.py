"""Point sampling used by the Mask2Former matcher and criterion.

Mask2Former evaluates its mask losses on a few thousand sampled points instead of every pixel.
The two sampling primitives are detectron2's own PointRend functions, which ship with detectron2
as ``detectron2.projects.point_rend`` (any source install or wheel built from the repository).
They are re-exported here so that the matcher and the criterion share one import site, and so
that the random-number call order is the one upstream uses (``HungarianMatcher`` in
``mask2former/modeling/matcher.py``, then ``SetCriterion.loss_masks`` in
``mask2former/modeling/criterion.py``, github.com/facebookresearch/Mask2Former).

``point_sample(input, coords)``: ``input`` (N, C, H, W), ``coords`` (N, P, 2) in [0, 1]^2 as
(x, y); returns (N, C, P) sampled bilinearly with zero padding, ``align_corners=False``
semantics (coordinate 0 is the outer edge of pixel 0).

``get_uncertain_point_coords_with_randomness(logits, uncertainty_func, P, k, beta)``: draws
``int(P * k)`` uniform points, keeps the ``int(beta * P)`` most uncertain ones and appends
``P - int(beta * P)`` fresh uniform points.
"""

import torch

try:
    from detectron2.projects.point_rend.point_features import (
        get_uncertain_point_coords_with_randomness,
        point_sample,
    )
except ImportError as e:  # pragma: no cover - depends on how detectron2 was installed
    raise ImportError(
        "freqfusion_d2's Mask2Former losses need detectron2.projects.point_rend, which is "
        "installed with detectron2 built from its repository (pip install -e <detectron2 "
        "checkout> or 'pip install git+https://github.com/facebookresearch/detectron2.git')."
    ) from e

__all__ = ["point_sample", "get_uncertain_point_coords_with_randomness", "calculate_uncertainty"]


def calculate_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of class-agnostic mask logits: ``-|logit|`` (0 on the decision boundary).

    Args:
        logits: (R, 1, ...) mask logits.

    Returns:
        A tensor of the same shape; larger means more uncertain.
    """
    if logits.shape[1] != 1:
        raise ValueError(
            f"logits: expected one channel (R, 1, ...), got shape {tuple(logits.shape)}"
        )
    return -torch.abs(logits)
