"""COCO instance large-scale-jitter mapper (``INPUT.DATASET_MAPPER_NAME: coco_instance_lsj``).

Same augmentation as the panoptic LSJ mapper; targets come from the instance annotations.
Crowd annotations are dropped, and so are instances left empty by the crop.
"""

import copy
import logging
from typing import List

from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .augmentations import build_lsj_augmentation
from .build import DATASET_MAPPER_REGISTRY
from .utils import image_to_tensor, masks_to_instances, transformed_instance_masks

__all__ = ["COCOInstanceNewBaselineDatasetMapper"]

logger = logging.getLogger(__name__)


@DATASET_MAPPER_REGISTRY.register()
class COCOInstanceNewBaselineDatasetMapper:
    """Maps a COCO instance dataset dict to Mask2Former training inputs.

    Output: ``"image"`` uint8 (3, S, S) and ``"instances"`` with ``gt_classes``, ``gt_masks``
    (N, S, S) bool and ``gt_boxes`` computed from the masks. With ``is_train=False`` only the
    image is returned.
    """

    @configurable
    def __init__(self, is_train: bool = True, *, tfm_gens: List[T.Augmentation], image_format: str):
        """
        Args:
            is_train: training (targets built) or not (annotations dropped).
            tfm_gens: augmentations, applied in order.
            image_format: format for :func:`detectron2.data.detection_utils.read_image`.
        """
        self.is_train = is_train
        self.tfm_gens = tfm_gens
        self.img_format = image_format
        logger.info("[%s] augmentations: %s", type(self).__name__, tfm_gens)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            "is_train": is_train,
            "tfm_gens": build_lsj_augmentation(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.img_format)
        utils.check_image_size(dataset_dict, image)
        original_shape = image.shape[:2]
        image, transforms = T.apply_transform_gens(self.tfm_gens, image)
        image_shape = image.shape[:2]
        dataset_dict["image"] = image_to_tensor(image)

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict

        if "annotations" in dataset_dict:
            classes, masks = transformed_instance_masks(
                dataset_dict.pop("annotations"), transforms, *original_shape
            )
            # Instances the crop removed entirely are dropped.
            keep = [i for i, mask in enumerate(masks) if mask.any()]
            dataset_dict["instances"] = masks_to_instances(
                image_shape, [classes[i] for i in keep], [masks[i] for i in keep], with_boxes=True
            )
        return dataset_dict
