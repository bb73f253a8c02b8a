"""Loads the compiled extension ``freqfusion_d2._C`` once, tolerating its absence."""

import functools
import logging
from types import ModuleType
from typing import Optional

import torch

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def get_extension() -> Optional[ModuleType]:
    """Returns ``freqfusion_d2._C``, or None (logged once) when it was not built.

    Importing the extension also registers its kernels as ``torch.ops.freqfusion_d2.*``.
    """
    try:
        from freqfusion_d2 import _C
    except ImportError as e:
        logger.warning(
            "freqfusion_d2._C is not available (%s); the pure-PyTorch reference ops are used "
            "instead. They are slower and use much more memory. Build the extension with "
            "`pip install --no-build-isolation -e .`.",
            e,
        )
        return None
    return _C


@functools.lru_cache(maxsize=None)
def _warn_no_cuda_kernels() -> None:
    logger.warning(
        "freqfusion_d2._C was built without CUDA kernels; CUDA tensors use the pure-PyTorch "
        "reference ops. Rebuild with a CUDA toolkit (or FORCE_CUDA=1) to get them."
    )


def has_kernel_for(device: torch.device) -> bool:
    """Whether the compiled extension has kernels for tensors on ``device``."""
    return _has_kernel_for_type(device.type)


# A constant for torch.compile: it is evaluated once while tracing instead of being traced
# through the cached loader (which would warn and break the graph at the pybind call).
@torch.compiler.assume_constant_result
def _has_kernel_for_type(device_type: str) -> bool:
    ext = get_extension()
    if ext is None:
        return False
    if device_type == "cpu":
        return True
    if device_type == "cuda":
        if ext.with_cuda():
            return True
        _warn_no_cuda_kernels()
    return False
