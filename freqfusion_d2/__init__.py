"""freqfusion_d2: frequency-aware feature fusion (FreqFusion) for Detectron2.

``freqfusion_d2.layers`` (the CARAFE op and the FreqFusion module) needs only PyTorch. Importing
``freqfusion_d2`` registers the backbones, models and datasets in detectron2's registries.
"""

__version__ = "0.1.0"

from . import data, modeling  # noqa: E402,F401  (register models and datasets)
from .config import add_freqfusion_config  # noqa: E402
from .config_maskformer2 import add_maskformer2_config  # noqa: E402

__all__ = ["__version__", "add_freqfusion_config", "add_maskformer2_config"]
