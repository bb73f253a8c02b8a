"""freqfusion_d2: frequency-aware feature fusion (FreqFusion) for Detectron2.

``freqfusion_d2.layers`` (the compiled ops and the FreqFusion module) needs only PyTorch, and
importing ``freqfusion_d2`` does not import detectron2. The Detectron2 side registers its
components when it is imported: ``freqfusion_d2.modeling`` (backbones, heads, meta
architectures), ``freqfusion_d2.data`` (datasets, mappers). The config adders
``freqfusion_d2.add_freqfusion_config`` and ``freqfusion_d2.add_maskformer2_config`` are loaded
on first use and import both, so the usual ``from freqfusion_d2 import add_freqfusion_config``
also registers everything.
"""

import importlib

__version__ = "0.1.0"

# Public names that need detectron2, and the submodule defining each.
_DETECTRON2_API = {
    "add_freqfusion_config": "config",
    "add_maskformer2_config": "config_maskformer2",
}

__all__ = ["__version__", *_DETECTRON2_API]


def __getattr__(name):
    if name not in _DETECTRON2_API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    importlib.import_module(".data", __name__)
    importlib.import_module(".modeling", __name__)
    value = getattr(importlib.import_module("." + _DETECTRON2_API[name], __name__), name)
    globals()[name] = value
    return value
