"""Training wiring: config setup, the Trainer and its checkpointer."""

from .checkpoint import FreqFusionCheckpointer
from .defaults import setup_cfg
from .trainer import Trainer

__all__ = ["FreqFusionCheckpointer", "Trainer", "setup_cfg"]
