"""Detectron2 components of freqfusion_d2; importing this registers them."""
from . import backbone, meta_arch, pixel_decoder, transformer_decoder  # noqa: F401
