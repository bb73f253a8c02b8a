"""Shared constructor of the training-only MaskFormer mappers (instance, semantic, panoptic)."""

import logging
from typing import List

from detectron2.config import configurable
from detectron2.data import transforms as T

__all__ = ["MaskFormerDatasetMapperBase"]

logger = logging.getLogger(__name__)


class MaskFormerDatasetMapperBase:
    """Holds the augmentations, image format and padding size of a MaskFormer training mapper.

    Subclasses provide ``from_config`` (their own augmentation) and ``__call__``.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List[T.Augmentation],
        image_format: str,
        size_divisibility: int,
    ):
        """
        Args:
            is_train: must be True; evaluation uses detectron2's ``DatasetMapper``.
            augmentations: augmentations, applied in order.
            image_format: format for :func:`detectron2.data.detection_utils.read_image`.
            size_divisibility: if > 0, the fixed square size to pad to.
        """
        if not is_train:
            raise ValueError(
                f"is_train: {type(self).__name__} is for training only; evaluation uses "
                "detectron2's DatasetMapper"
            )
        self.is_train = is_train
        self.tfm_gens = augmentations
        self.img_format = image_format
        self.size_divisibility = size_divisibility
        logger.info("[%s] augmentations: %s", type(self).__name__, augmentations)
