"""freqfusion_d2: frequency-aware feature fusion (FreqFusion) for Detectron2.

``freqfusion_d2.layers`` (the CARAFE op and the FreqFusion module) needs only PyTorch.
"""

__version__ = "0.1.0"

from .config_maskformer2 import add_maskformer2_config  # noqa: E402
from . import modeling  # noqa: E402,F401  (registers the models)
