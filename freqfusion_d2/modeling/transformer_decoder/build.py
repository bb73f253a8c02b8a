"""Registry and builder of Mask2Former transformer decoders."""

from detectron2.utils.registry import Registry

__all__ = ["TRANSFORMER_DECODER_REGISTRY", "build_transformer_decoder"]

TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_MODULE")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """
Registry of the transformer decoders of MaskFormer-style heads (upstream name
``TRANSFORMER_MODULE``). A registered class is called as ``cls(cfg, in_channels,
mask_classification)``:

* ``in_channels`` (int): channels of the features the decoder attends to;
* ``mask_classification`` (bool): whether it predicts a class per query.

It must return an ``nn.Module`` whose ``forward(multi_scale_features, mask_features, mask=None)``
returns a dict with ``pred_logits`` (B, Q, K + 1), ``pred_masks`` (B, Q, H, W) and
``aux_outputs`` (a list of such dicts for the intermediate predictions).
"""


def build_transformer_decoder(cfg, in_channels: int, mask_classification: bool = True):
    """Builds ``cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME`` from the registry.

    Args:
        cfg: a config with the Mask2Former keys.
        in_channels: channels of the features the decoder attends to.
        mask_classification: predict a class per query.
    """
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    return TRANSFORMER_DECODER_REGISTRY.get(name)(cfg, in_channels, mask_classification)
