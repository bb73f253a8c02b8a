"""Instance MaskFormer mapper (``INPUT.DATASET_MAPPER_NAME: mask_former_instance``).

Resize, plain random crop, optional SSD colour augmentation and flip; one training target per
non-crowd instance annotation (polygons, RLE or binary array). Training only.
"""

import copy
import logging
from typing import List

import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .augmentations import build_instance_augmentation
from .build import DATASET_MAPPER_REGISTRY
from .utils import (
    image_to_tensor,
    masks_to_instances,
    pad_bottom_right,
    transformed_instance_masks,
)

__all__ = ["MaskFormerInstanceDatasetMapper"]

logger = logging.getLogger(__name__)


@DATASET_MAPPER_REGISTRY.register()
class MaskFormerInstanceDatasetMapper:
    """Maps an instance dataset dict (``annotations``) to training inputs.

    Output: ``"image"`` uint8 (3, H, W) and ``"instances"`` with ``gt_classes`` and
    ``gt_masks`` (N, H, W) bool. With ``size_divisibility > 0`` the image is padded bottom-right
    to exactly that square size with 128 and the masks with 0.
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

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            "is_train": is_train,
            "augmentations": build_instance_augmentation(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.img_format)
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        transforms = T.AugmentationList(self.tfm_gens)(aug_input)

        if "annotations" not in dataset_dict:
            raise ValueError(
                f"dataset_dict: no 'annotations' for image {dataset_dict['file_name']}"
            )
        classes, masks = transformed_instance_masks(
            dataset_dict.pop("annotations"), transforms, image.shape[0], image.shape[1]
        )

        image = image_to_tensor(aug_input.image)
        if self.size_divisibility > 0:
            image = pad_bottom_right(image, self.size_divisibility, 128)
            masks = [
                pad_bottom_right(torch.from_numpy(m).to(torch.uint8), self.size_divisibility, 0)
                .bool()
                .numpy()
                for m in masks
            ]
        instances = masks_to_instances(tuple(image.shape[-2:]), classes, masks)
        dataset_dict["image"] = image
        dataset_dict["instances"] = instances
        return dataset_dict
