"""Optimizer and learning-rate schedule builders used by the Trainer."""

from detectron2.solver import build_lr_scheduler as _d2_build_lr_scheduler
from detectron2.solver import build_optimizer as _d2_build_optimizer

from .maskformer import (
    build_maskformer_lr_scheduler,
    build_maskformer_optimizer,
    get_maskformer_param_groups,
    maybe_add_full_model_gradient_clipping,
)

__all__ = [
    "build_optimizer",
    "build_lr_scheduler",
    "build_maskformer_lr_scheduler",
    "build_maskformer_optimizer",
    "get_maskformer_param_groups",
    "maybe_add_full_model_gradient_clipping",
]


# Meta-architectures trained with the Mask2Former recipe (param groups, AdamW, poly schedule).
_MASKFORMER_ARCHS = ("MaskFormer",)


def build_optimizer(cfg, model):
    """The Mask2Former recipe (:func:`build_maskformer_optimizer`) for
    ``MODEL.META_ARCHITECTURE == "MaskFormer"``; otherwise detectron2's SGD recipe
    (``SOLVER.BASE_LR``, ``MOMENTUM``, ``WEIGHT_DECAY``, ``WEIGHT_DECAY_NORM``, gradient
    clipping), the one used by the Panoptic FPN and R-CNN configs."""
    if cfg.MODEL.META_ARCHITECTURE in _MASKFORMER_ARCHS:
        return build_maskformer_optimizer(cfg, model)
    return _d2_build_optimizer(cfg, model)


def build_lr_scheduler(cfg, optimizer):
    """The schedule named by ``SOLVER.LR_SCHEDULER_NAME``: ``WarmupPolyLR`` (Mask2Former) or
    one of detectron2's (warmup + steps by default)."""
    if cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR":
        return build_maskformer_lr_scheduler(cfg, optimizer)
    return _d2_build_lr_scheduler(cfg, optimizer)
