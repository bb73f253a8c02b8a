"""Training wiring: config setup, the Trainer and its checkpointer, the demo's predictor."""

from .checkpoint import FreqFusionCheckpointer
from .defaults import setup_cfg
from .predictor import Predictor, confidence_threshold_opts
from .trainer import Trainer

__all__ = [
    "FreqFusionCheckpointer",
    "Predictor",
    "Trainer",
    "confidence_threshold_opts",
    "setup_cfg",
]
