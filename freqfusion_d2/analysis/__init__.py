"""Frequency-aliasing analysis (Seg-Aliasing, Chen et al., ICLR 2024): the aliasing score, its
pooled and local variants, the radially averaged power spectrum, and ``AliasingProbe``, which
measures them at the input of every downsampling layer of a model.

The score functions need only PyTorch; ``AliasingProbe`` needs detectron2 (it recognises
detectron2 ResNets and this project's Swin) and is imported on first access.
"""

import importlib

from .aliasing_score import (
    REGIONS,
    aliasing_energy,
    aliasing_score,
    esr,
    local_aliasing_map,
    nyquist,
    pooled_aliasing_score,
    radial_power_spectrum,
)

__all__ = [
    "REGIONS",
    "AliasingProbe",
    "ProbeTarget",
    "aliasing_energy",
    "aliasing_score",
    "esr",
    "local_aliasing_map",
    "nyquist",
    "pooled_aliasing_score",
    "radial_power_spectrum",
]

_LAZY = {"AliasingProbe": ".probe", "ProbeTarget": ".probe"}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
