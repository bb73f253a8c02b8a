"""Builder of MaskFormer pixel decoders.

Pixel decoders live in detectron2's ``SEM_SEG_HEADS_REGISTRY``, as upstream Mask2Former registers
them, so ``MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME`` from upstream YAMLs resolves unchanged. A pixel
decoder is called as ``cls(cfg, input_shape)`` and must have a callable
``forward_features(features) -> (mask_features, transformer_encoder_features,
multi_scale_features)``.
"""

from typing import Dict

from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

__all__ = ["build_pixel_decoder"]


def build_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]):
    """Builds ``cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``.

    Args:
        cfg: a config with the Mask2Former keys.
        input_shape: the backbone's output shapes (all of them; the decoder filters them).

    Raises:
        ValueError: if the built module has no callable ``forward_features``.
    """
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    model = SEM_SEG_HEADS_REGISTRY.get(name)(cfg, input_shape)
    if not callable(getattr(model, "forward_features", None)):
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME={name!r} is not a pixel decoder: it has no "
            f"forward_features method"
        )
    return model
