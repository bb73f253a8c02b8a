"""``MaskFormerHead``: a pixel decoder followed by a transformer decoder."""

import logging
from typing import Dict, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..pixel_decoder.build import build_pixel_decoder
from ..transformer_decoder.build import build_transformer_decoder

logger = logging.getLogger(__name__)

__all__ = ["MaskFormerHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class MaskFormerHead(nn.Module):
    """Head of MaskFormer / Mask2Former: ``forward(features)`` runs the pixel decoder and feeds
    its outputs to the transformer decoder, returning the decoder's prediction dict.

    State-dict keys are ``pixel_decoder.*`` and ``predictor.*``. The class has ``_version = 2``;
    checkpoints of version 1 (or without version metadata) whose pixel-decoder keys sit directly
    under the head (MaskFormer v1 layout) are renamed on load.
    """

    _version = 2

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        version = local_metadata.get("version", None)
        if version is None or version < 2:
            # Old layout: pixel-decoder keys directly under the head. Only keys under this head
            # that are neither pixel_decoder.* nor predictor* are moved, so current-format
            # checkpoints without metadata (plain dicts, .pkl files) load unchanged.
            renamed = []
            for k in list(state_dict.keys()):
                if not k.startswith(prefix):
                    continue
                rest = k[len(prefix) :]
                if rest.startswith("pixel_decoder.") or rest.startswith("predictor"):
                    continue
                new_k = prefix + "pixel_decoder." + rest
                state_dict[new_k] = state_dict.pop(k)
                renamed.append(k)
            if renamed:
                logger.warning(
                    "MaskFormerHead: moved %d keys of an old-format checkpoint under '%s' "
                    "(e.g. %s); re-save the checkpoint to drop this conversion.",
                    len(renamed),
                    prefix + "pixel_decoder.",
                    renamed[0],
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        pixel_decoder: nn.Module,
        loss_weight: float = 1.0,
        ignore_value: int = -1,
        transformer_predictor: nn.Module,
        transformer_in_feature: str,
    ):
        """
        Args:
            input_shape: shapes of the backbone features the head uses.
            num_classes: K.
            pixel_decoder: module with ``forward_features``.
            loss_weight: kept for config compatibility (unused by Mask2Former).
            ignore_value: label ignored in semantic targets (kept for compatibility).
            transformer_predictor: the transformer decoder.
            transformer_in_feature: what the decoder attends to: "multi_scale_pixel_decoder",
                "transformer_encoder", "pixel_embedding" or a backbone feature name.
        """
        super().__init__()
        input_shape = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in input_shape]
        self.ignore_value = ignore_value
        self.common_stride = 4
        self.loss_weight = loss_weight
        self.pixel_decoder = pixel_decoder
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        in_feature = cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE
        if in_feature in ("transformer_encoder", "multi_scale_pixel_decoder"):
            predictor_in_channels = head.CONVS_DIM
        elif in_feature == "pixel_embedding":
            predictor_in_channels = head.MASK_DIM
        elif in_feature in input_shape:
            predictor_in_channels = input_shape[in_feature].channels
        else:
            raise ValueError(
                f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE={in_feature!r} is neither a decoder "
                f"output nor a backbone feature ({sorted(input_shape)})"
            )
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "ignore_value": head.IGNORE_VALUE,
            "num_classes": head.NUM_CLASSES,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "loss_weight": head.LOSS_WEIGHT,
            "transformer_in_feature": in_feature,
            "transformer_predictor": build_transformer_decoder(
                cfg, predictor_in_channels, mask_classification=True
            ),
        }

    def forward(self, features: Dict[str, torch.Tensor], mask: Optional[torch.Tensor] = None):
        """
        Args:
            features: backbone features by name.
            mask: passed on to the decoder (Mask2Former's ignores it).

        Returns:
            the transformer decoder's prediction dict.
        """
        return self.layers(features, mask)

    def layers(self, features: Dict[str, torch.Tensor], mask: Optional[torch.Tensor] = None):
        mask_features, encoder_features, multi_scale_features = self.pixel_decoder.forward_features(
            features
        )
        return self._predict(features, mask_features, encoder_features, multi_scale_features, mask)

    def _predict(self, features, mask_features, encoder_features, multi_scale_features, mask):
        """Runs the transformer decoder on the input named by ``transformer_in_feature``."""
        if self.transformer_in_feature == "multi_scale_pixel_decoder":
            return self.predictor(multi_scale_features, mask_features, mask)
        if self.transformer_in_feature == "transformer_encoder":
            if encoder_features is None:
                raise ValueError(
                    "MaskFormerHead: TRANSFORMER_IN_FEATURE='transformer_encoder' needs a pixel "
                    "decoder with a transformer encoder (e.g. TransformerEncoderPixelDecoder)"
                )
            return self.predictor(encoder_features, mask_features, mask)
        if self.transformer_in_feature == "pixel_embedding":
            return self.predictor(mask_features, mask_features, mask)
        return self.predictor(features[self.transformer_in_feature], mask_features, mask)
