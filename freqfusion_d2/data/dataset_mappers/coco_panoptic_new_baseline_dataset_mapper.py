"""COCO panoptic large-scale-jitter mapper (``INPUT.DATASET_MAPPER_NAME: coco_panoptic_lsj``).

Spec mask2former.md section 5.1. One training target per non-crowd segment, things and stuff
alike; crowd segments are dropped, so their pixels are negatives for every mask.
"""

import copy
import logging
from typing import List

from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .augmentations import build_lsj_augmentation
from .build import DATASET_MAPPER_REGISTRY
from .utils import image_to_tensor, masks_to_instances, rgb2id

__all__ = ["COCOPanopticNewBaselineDatasetMapper"]

logger = logging.getLogger(__name__)


@DATASET_MAPPER_REGISTRY.register()
class COCOPanopticNewBaselineDatasetMapper:
    """Maps a COCO panoptic dataset dict to Mask2Former training inputs.

    Output: ``"image"`` uint8 (3, S, S) with S = ``INPUT.IMAGE_SIZE`` (128 in the padding) and
    ``"instances"`` with ``gt_classes`` (contiguous ids from ``segments_info``), ``gt_masks``
    (N, S, S) bool and ``gt_boxes``. With ``is_train=False`` only the image is returned.
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
        image, transforms = T.apply_transform_gens(self.tfm_gens, image)
        image_shape = image.shape[:2]
        dataset_dict["image"] = image_to_tensor(image)

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict

        if "pan_seg_file_name" in dataset_dict:
            pan_seg = utils.read_image(dataset_dict.pop("pan_seg_file_name"), "RGB")
            # Nearest resize; the crop pads with (255, 255, 255), an id that matches no segment.
            pan_seg = rgb2id(transforms.apply_segmentation(pan_seg))
            segments = [s for s in dataset_dict["segments_info"] if not s["iscrowd"]]
            dataset_dict["instances"] = masks_to_instances(
                image_shape,
                [s["category_id"] for s in segments],
                [pan_seg == s["id"] for s in segments],
                with_boxes=True,
            )
        return dataset_dict
