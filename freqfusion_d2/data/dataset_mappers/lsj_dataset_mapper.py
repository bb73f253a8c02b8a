"""Shared part of the COCO large-scale-jitter mappers (instance and panoptic).

Both read the image, run the LSJ augmentation and differ only in where their training targets
come from; :class:`LSJDatasetMapperBase` does the former and leaves :meth:`_add_targets` to the
subclasses.
"""

import copy
import logging
from typing import List, Tuple

from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .augmentations import build_lsj_augmentation
from .utils import image_to_tensor

__all__ = ["LSJDatasetMapperBase"]

logger = logging.getLogger(__name__)


class LSJDatasetMapperBase:
    """Reads and augments the image of a dataset dict; subclasses add the ``"instances"``.

    Output: ``"image"`` uint8 (3, S, S). With ``is_train=False`` only the image is returned
    (annotations dropped); otherwise :meth:`_add_targets` fills in the targets.
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

    def _add_targets(
        self,
        dataset_dict: dict,
        transforms: T.TransformList,
        original_shape: Tuple[int, int],
        image_shape: Tuple[int, int],
    ) -> None:
        """Sets ``dataset_dict["instances"]`` from the dict's annotations, in place.

        Args:
            dataset_dict: the (copied) dataset dict, image already set.
            transforms: the transforms applied to the image.
            original_shape: (H, W) of the image as read.
            image_shape: (H, W) of the augmented image.
        """
        raise NotImplementedError

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

        self._add_targets(dataset_dict, transforms, original_shape, image_shape)
        return dataset_dict
