"""Single-image inference for demo/demo.py: detectron2's DefaultPredictor with verified weights
and one confidence threshold for every model."""

import logging
from typing import Any, Dict, List, Optional

from detectron2.config import CfgNode
from detectron2.engine import DefaultPredictor

from ..utils.cli import InputError
from .checkpoint import FreqFusionCheckpointer

__all__ = ["DEFAULT_CONFIDENCE", "Predictor", "confidence_threshold_opts"]

logger = logging.getLogger(__name__)

# Instances below this score are not drawn unless another threshold is given (detectron2's
# demo uses the same default).
DEFAULT_CONFIDENCE = 0.5
ARGUMENT = "--confidence-threshold"


def confidence_threshold_opts(cfg: CfgNode, threshold: Optional[float]) -> List[str]:
    """Config overrides that make ``threshold`` the minimum score of the predictions drawn.

    * R-CNN and Panoptic FPN models: the box score threshold of the ROI / RetinaNet heads and
      Panoptic FPN's instance threshold when combining (``threshold`` None: 0.5).
    * Mask2Former (``MaskFormer``): a panoptic segment is kept when its query's class score
      exceeds ``threshold`` (``MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD``; ``threshold``
      None keeps the config's value). Its instances are filtered by :class:`Predictor`.

    Args:
        cfg: the model's config.
        threshold: the score threshold in [0, 1], or None for the defaults above.

    Returns:
        ``KEY VALUE`` overrides for ``cfg``.

    Raises:
        InputError: (a ValueError) when ``threshold`` is outside [0, 1], or is given for a
            model whose outputs have no scores (semantic segmentation only).
    """
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise InputError(ARGUMENT, f"{threshold} is not a score", "a value in [0, 1]")
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch == "MaskFormer":
        test = cfg.MODEL.MASK_FORMER.TEST
        if threshold is None:
            return []
        if not (test.INSTANCE_ON or test.PANOPTIC_ON):
            raise InputError(
                ARGUMENT,
                "has no effect on this model, which predicts semantic segmentation only "
                "(MODEL.MASK_FORMER.TEST.INSTANCE_ON and PANOPTIC_ON are False)",
            )
        return ["MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", str(threshold)]
    if arch == "SemanticSegmentor":
        if threshold is None:
            return []
        raise InputError(
            ARGUMENT,
            "has no effect on this model, which predicts semantic segmentation only "
            "(MODEL.META_ARCHITECTURE SemanticSegmentor)",
        )
    value = str(DEFAULT_CONFIDENCE if threshold is None else threshold)
    return [
        "MODEL.RETINANET.SCORE_THRESH_TEST",
        value,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        value,
        "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH",
        value,
    ]


class Predictor(DefaultPredictor):
    """detectron2's :class:`DefaultPredictor` that

    * loads ``cfg.MODEL.WEIGHTS`` with :class:`FreqFusionCheckpointer`, which verifies the file
      and rejects a checkpoint of another architecture;
    * drops the ``instances`` scoring below ``score_threshold`` (Mask2Former returns its top-k
      query-class pairs whatever their score).
    """

    def __init__(self, cfg: CfgNode, score_threshold: Optional[float] = DEFAULT_CONFIDENCE):
        """
        Args:
            cfg: the model's config (apply :func:`confidence_threshold_opts` first).
            score_threshold: minimum instance score; None keeps every instance.
        """
        weights = cfg.MODEL.WEIGHTS
        # DefaultPredictor loads the weights with a plain DetectionCheckpointer: give it none.
        no_weights = cfg.clone()
        no_weights.defrost()
        no_weights.MODEL.WEIGHTS = ""
        super().__init__(no_weights)
        self.cfg = cfg.clone()
        if weights:
            FreqFusionCheckpointer(self.model).load(weights)
        else:
            logger.warning("MODEL.WEIGHTS is empty: the predictions come from an untrained model")
        self.score_threshold = score_threshold

    def __call__(self, original_image) -> Dict[str, Any]:
        predictions = super().__call__(original_image)
        if self.score_threshold is not None and "instances" in predictions:
            instances = predictions["instances"]
            predictions["instances"] = instances[instances.scores >= self.score_threshold]
        return predictions
