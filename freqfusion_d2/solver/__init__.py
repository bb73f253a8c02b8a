"""Optimizer and learning-rate scheduler builders."""

from .maskformer import (
    build_maskformer_lr_scheduler,
    build_maskformer_optimizer,
    get_maskformer_param_groups,
    maybe_add_full_model_gradient_clipping,
)

__all__ = [
    "build_maskformer_lr_scheduler",
    "build_maskformer_optimizer",
    "get_maskformer_param_groups",
    "maybe_add_full_model_gradient_clipping",
]
