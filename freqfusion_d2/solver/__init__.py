"""Optimizer and learning-rate schedule builders used by the Trainer."""

from detectron2.solver import build_lr_scheduler as _d2_build_lr_scheduler
from detectron2.solver import build_optimizer as _d2_build_optimizer

__all__ = ["build_optimizer", "build_lr_scheduler"]


def build_optimizer(cfg, model):
    """detectron2's SGD recipe (``SOLVER.BASE_LR``, ``MOMENTUM``, ``WEIGHT_DECAY``,
    ``WEIGHT_DECAY_NORM``, gradient clipping), the one used by the Panoptic FPN and R-CNN
    configs."""
    return _d2_build_optimizer(cfg, model)


def build_lr_scheduler(cfg, optimizer):
    """detectron2's schedule from ``SOLVER.LR_SCHEDULER_NAME`` (warmup + steps by default)."""
    return _d2_build_lr_scheduler(cfg, optimizer)
