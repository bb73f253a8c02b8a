"""``torch.compile`` of a model in place, for train_net.py and demo/demo.py (``--compile``)."""

import logging
from typing import Optional

from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

logger = logging.getLogger(__name__)

__all__ = ["compile_model", "COMPILE_SCOPES"]

# "model": the whole forward (detectron2's Python structures and data-dependent steps become
# graph breaks between compiled graphs); "backbone": only the backbone (ResNet/Swin + the
# FreqFusion FPN, one graph), which compiles much faster.
COMPILE_SCOPES = ("model", "backbone")


def compile_model(
    model: nn.Module, scope: str = "model", *, mode: Optional[str] = None, dynamic=None
) -> nn.Module:
    """Compiles ``model`` (or its backbone) in place with ``nn.Module.compile``.

    In-place compilation keeps the module and its state-dict keys, so checkpointing,
    DistributedDataParallel and the optimizer are unaffected. CARAFE and deformable attention
    are ``torch.library`` ops with shape functions: they are single nodes of the compiled
    graphs, not graph breaks. The first call of each new input size compiles (slow); later
    calls reuse the compiled code.

    Args:
        model: the model, possibly wrapped in (Distributed)DataParallel.
        scope: "model" or "backbone" (see ``COMPILE_SCOPES``).
        mode, dynamic: passed to ``torch.compile``.

    Returns:
        ``model`` itself.

    Raises:
        ValueError: for an unknown scope, or "backbone" for a model without one.
    """
    if scope not in COMPILE_SCOPES:
        raise ValueError(f"compile_model: scope must be one of {COMPILE_SCOPES}, got {scope!r}")
    inner = model.module if isinstance(model, (DataParallel, DistributedDataParallel)) else model
    if scope == "backbone":
        target = getattr(inner, "backbone", None)
        if not isinstance(target, nn.Module):
            raise ValueError(
                f"compile_model: scope='backbone' needs a model with a backbone, got "
                f"{type(inner).__name__}"
            )
    else:
        target = inner
    target.compile(mode=mode, dynamic=dynamic)
    logger.info(
        "torch.compile of the %s (%s); the first iteration of each input size compiles",
        scope,
        type(target).__name__,
    )
    return model
