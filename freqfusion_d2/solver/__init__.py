"""Optimizer and learning-rate schedule builders used by the Trainer."""

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


def build_optimizer(cfg, model):
    """detectron2's SGD recipe (``SOLVER.BASE_LR``, ``MOMENTUM``, ``WEIGHT_DECAY``,
    ``WEIGHT_DECAY_NORM``, gradient clipping), the one used by the Panoptic FPN and R-CNN
    configs."""
    return _d2_build_optimizer(cfg, model)


def build_lr_scheduler(cfg, optimizer):
    """detectron2's schedule from ``SOLVER.LR_SCHEDULER_NAME`` (warmup + steps by default)."""
    return _d2_build_lr_scheduler(cfg, optimizer)
