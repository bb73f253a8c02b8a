"""Optimizer and LR-scheduler builders of the Mask2Former recipe.

Same recipe as upstream Mask2Former's ``train_net.py`` (``Trainer.build_optimizer`` and
``Trainer.build_lr_scheduler``, github.com/facebookresearch/Mask2Former).

``build_maskformer_optimizer(cfg, model)``:

* one parameter group per parameter, lr ``SOLVER.BASE_LR`` times ``SOLVER.BACKBONE_MULTIPLIER``
  when the owning module's name contains ``"backbone"``;
* weight decay ``SOLVER.WEIGHT_DECAY``, except 0 for Swin's ``relative_position_bias_table`` and
  ``absolute_pos_embed``, ``SOLVER.WEIGHT_DECAY_NORM`` for normalization layers and
  ``SOLVER.WEIGHT_DECAY_EMBED`` for ``nn.Embedding`` (applied in that order; the last match wins);
* ``torch.optim.AdamW`` (``SOLVER.OPTIMIZER == "ADAMW"``) or SGD with ``SOLVER.MOMENTUM``;
* with ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE == "full_model"``, ``step()`` first clips the L2 norm of
  all gradients together to ``CLIP_VALUE`` (``NORM_TYPE`` is not used, as upstream); other clip
  types go through detectron2's ``maybe_add_gradient_clipping``.

``build_maskformer_lr_scheduler(cfg, optimizer)``: ``WarmupPolyLR`` (detectron2's DeepLab
project) for ``SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR"``, detectron2's builder otherwise.
"""

import copy
import itertools
import logging
from typing import Any, Dict, List, Type

import torch
from detectron2.config import CfgNode
from detectron2.solver import build_lr_scheduler as build_d2_lr_scheduler
from detectron2.solver.build import maybe_add_gradient_clipping
from torch import nn

__all__ = [
    "NORM_MODULE_TYPES",
    "build_maskformer_optimizer",
    "build_maskformer_lr_scheduler",
    "get_maskformer_param_groups",
    "maybe_add_full_model_gradient_clipping",
]

logger = logging.getLogger(__name__)

# Modules whose parameters get SOLVER.WEIGHT_DECAY_NORM.
NORM_MODULE_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)

# Parameter-name substrings (Swin position tables) that are never decayed.
_NO_DECAY_PARAM_NAMES = ("relative_position_bias_table", "absolute_pos_embed")


def get_maskformer_param_groups(cfg: CfgNode, model: nn.Module) -> List[Dict[str, Any]]:
    """One optimizer group per trainable parameter, with its own ``lr`` and ``weight_decay``.

    Parameters are visited in ``model.named_modules()`` order; a parameter shared by several
    modules is put in the group of the first module that owns it. Frozen parameters are skipped.
    """
    defaults = {"lr": cfg.SOLVER.BASE_LR, "weight_decay": cfg.SOLVER.WEIGHT_DECAY}
    groups: List[Dict[str, Any]] = []
    seen = set()
    no_decay_names = []
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or param in seen:
                continue
            seen.add(param)
            hyperparams = copy.copy(defaults)
            # A substring test, as upstream: keep "backbone" out of other module names.
            if "backbone" in module_name:
                hyperparams["lr"] = hyperparams["lr"] * cfg.SOLVER.BACKBONE_MULTIPLIER
            if any(name in param_name for name in _NO_DECAY_PARAM_NAMES):
                hyperparams["weight_decay"] = 0.0
                no_decay_names.append(f"{module_name}.{param_name}")
            if isinstance(module, NORM_MODULE_TYPES):
                hyperparams["weight_decay"] = cfg.SOLVER.WEIGHT_DECAY_NORM
            if isinstance(module, nn.Embedding):
                hyperparams["weight_decay"] = cfg.SOLVER.WEIGHT_DECAY_EMBED
            groups.append({"params": [param], **hyperparams})
    if no_decay_names:
        logger.debug("Position tables without weight decay: %s", no_decay_names)
    return groups


def maybe_add_full_model_gradient_clipping(
    cfg: CfgNode, optimizer_type: Type[torch.optim.Optimizer]
) -> Type[torch.optim.Optimizer]:
    """Returns ``optimizer_type`` or a subclass whose ``step`` clips the global gradient norm.

    Clipping is on when ``SOLVER.CLIP_GRADIENTS.ENABLED``, ``CLIP_TYPE == "full_model"`` and
    ``CLIP_VALUE > 0``. Under AMP, detectron2's ``AMPTrainer`` unscales the gradients before
    calling ``step``, so the clip sees true gradient values.
    """
    clip = cfg.SOLVER.CLIP_GRADIENTS
    max_norm = clip.CLIP_VALUE
    if not (clip.ENABLED and clip.CLIP_TYPE == "full_model" and max_norm > 0.0):
        return optimizer_type

    class FullModelGradientClippingOptimizer(optimizer_type):
        def step(self, closure=None):
            all_params = itertools.chain(*[group["params"] for group in self.param_groups])
            torch.nn.utils.clip_grad_norm_(all_params, max_norm)
            return super().step(closure=closure)

    FullModelGradientClippingOptimizer.__name__ = (
        f"FullModelGradientClipping{optimizer_type.__name__}"
    )
    return FullModelGradientClippingOptimizer


def build_maskformer_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """Builds the Mask2Former optimizer (see the module docstring).

    Args:
        cfg: config with the detectron2 ``SOLVER`` keys plus ``SOLVER.OPTIMIZER``,
            ``SOLVER.BACKBONE_MULTIPLIER`` and ``SOLVER.WEIGHT_DECAY_EMBED``.
        model: the model whose trainable parameters are optimized.
    """
    groups = get_maskformer_param_groups(cfg, model)
    name = cfg.SOLVER.OPTIMIZER
    if name == "SGD":
        optimizer_type = maybe_add_full_model_gradient_clipping(cfg, torch.optim.SGD)
        optimizer = optimizer_type(groups, cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM)
    elif name == "ADAMW":
        optimizer_type = maybe_add_full_model_gradient_clipping(cfg, torch.optim.AdamW)
        optimizer = optimizer_type(groups, cfg.SOLVER.BASE_LR)
    else:
        raise ValueError(f"SOLVER.OPTIMIZER: expected 'ADAMW' or 'SGD', got {name!r}")
    if cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE != "full_model":
        optimizer = maybe_add_gradient_clipping(cfg, optimizer)
    return optimizer


def build_maskformer_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer):
    """``WarmupPolyLR`` for ``SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR"``, else detectron2's.

    The poly schedule is lr(it) = base_lr * warmup(it) * (1 - it / MAX_ITER) ** POLY_LR_POWER,
    replaced by base_lr * POLY_LR_CONSTANT_ENDING once the poly factor falls below that floor
    (when it is > 0 and warm-up is over).
    """
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return build_d2_lr_scheduler(cfg, optimizer)
    # Imported here so that only the poly schedule needs detectron2's DeepLab project.
    from detectron2.projects.deeplab.lr_scheduler import WarmupPolyLR

    return WarmupPolyLR(
        optimizer,
        cfg.SOLVER.MAX_ITER,
        warmup_factor=cfg.SOLVER.WARMUP_FACTOR,
        warmup_iters=cfg.SOLVER.WARMUP_ITERS,
        warmup_method=cfg.SOLVER.WARMUP_METHOD,
        power=cfg.SOLVER.POLY_LR_POWER,
        constant_ending=cfg.SOLVER.POLY_LR_CONSTANT_ENDING,
    )
