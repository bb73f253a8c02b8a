"""Mask2Former transformer decoders (own registry: ``TRANSFORMER_DECODER_REGISTRY``)."""

from .build import TRANSFORMER_DECODER_REGISTRY, build_transformer_decoder
from .mask2former_transformer_decoder import MultiScaleMaskedTransformerDecoder
from .maskformer_transformer_decoder import StandardTransformerDecoder
from .position_encoding import PositionEmbeddingSine

__all__ = [
    "TRANSFORMER_DECODER_REGISTRY",
    "build_transformer_decoder",
    "MultiScaleMaskedTransformerDecoder",
    "StandardTransformerDecoder",
    "PositionEmbeddingSine",
]
