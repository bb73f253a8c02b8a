"""Semantic MaskFormer mapper (``INPUT.DATASET_MAPPER_NAME: mask_former_semantic``).

Upstream: ``MaskFormerSemanticDatasetMapper`` in github.com/facebookresearch/Mask2Former
``mask2former/data/dataset_mappers/mask_former_semantic_dataset_mapper.py``, used for ADE20K.

One training target per class present in the label map (ignore label excluded), in ascending
class order. Training only.
"""

import copy
from typing import List

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .augmentations import build_semantic_augmentation
from .build import DATASET_MAPPER_REGISTRY
from .mask_former_dataset_mapper_base import MaskFormerDatasetMapperBase
from .utils import image_to_tensor, masks_to_instances, pad_bottom_right

__all__ = ["MaskFormerSemanticDatasetMapper"]


@DATASET_MAPPER_REGISTRY.register()
class MaskFormerSemanticDatasetMapper(MaskFormerDatasetMapperBase):
    """Maps a semantic-segmentation dataset dict (``sem_seg_file_name``) to training inputs.

    Output: ``"image"`` uint8 (3, H, W), ``"sem_seg"`` int64 (H, W) and ``"instances"`` with
    ``gt_classes`` and ``gt_masks`` (N, H, W) bool. With ``size_divisibility > 0`` image and
    label are padded bottom-right to exactly that square size, with 128 and ``ignore_label``.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List[T.Augmentation],
        image_format: str,
        ignore_label: int,
        size_divisibility: int,
    ):
        """
        Args:
            is_train: must be True; evaluation uses detectron2's ``DatasetMapper``.
            augmentations: augmentations, applied in order.
            image_format: format for :func:`detectron2.data.detection_utils.read_image`.
            ignore_label: label value excluded from the targets (and used for padding).
            size_divisibility: if > 0, the fixed square size to pad to.
        """
        super().__init__(
            is_train,
            augmentations=augmentations,
            image_format=image_format,
            size_divisibility=size_divisibility,
        )
        self.ignore_label = ignore_label

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        # The ignore label comes from the (first) training set's metadata.
        meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
        return {
            "is_train": is_train,
            "augmentations": build_semantic_augmentation(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": meta.ignore_label,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
        }

    def _read_sem_seg(self, dataset_dict: dict) -> np.ndarray:
        if "sem_seg_file_name" not in dataset_dict:
            raise ValueError(
                f"dataset_dict: no 'sem_seg_file_name' for image {dataset_dict['file_name']}"
            )
        # As float64: detectron2's resize transforms do not accept uint16 labels.
        return utils.read_image(dataset_dict.pop("sem_seg_file_name")).astype("double")

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.img_format)
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image, sem_seg=self._read_sem_seg(dataset_dict))
        T.apply_transform_gens(self.tfm_gens, aug_input)

        image = image_to_tensor(aug_input.image)
        sem_seg = torch.as_tensor(aug_input.sem_seg.astype("long"))
        if self.size_divisibility > 0:
            image = pad_bottom_right(image, self.size_divisibility, 128)
            sem_seg = pad_bottom_right(sem_seg, self.size_divisibility, self.ignore_label)
        dataset_dict["image"] = image
        dataset_dict["sem_seg"] = sem_seg

        if "annotations" in dataset_dict:
            raise ValueError(
                "dataset_dict: a semantic-segmentation dict must not have 'annotations'"
            )

        label = sem_seg.numpy()
        classes = np.unique(label)
        classes = classes[classes != self.ignore_label]
        dataset_dict["instances"] = masks_to_instances(
            tuple(label.shape), classes, [label == c for c in classes]
        )
        return dataset_dict
