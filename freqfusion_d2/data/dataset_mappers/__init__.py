"""Training dataset mappers, chosen by ``INPUT.DATASET_MAPPER_NAME`` (:func:`build_train_mapper`).

The Mask2Former mappers here are training-only; evaluation uses detectron2's ``DatasetMapper``.
"""

from .augmentations import (
    build_instance_augmentation,
    build_lsj_augmentation,
    build_semantic_augmentation,
)
from .build import DATASET_MAPPER_REGISTRY, MAPPER_NAME_ALIASES, build_train_mapper
from .coco_instance_new_baseline_dataset_mapper import COCOInstanceNewBaselineDatasetMapper
from .coco_panoptic_new_baseline_dataset_mapper import COCOPanopticNewBaselineDatasetMapper
from .mask_former_instance_dataset_mapper import MaskFormerInstanceDatasetMapper
from .mask_former_panoptic_dataset_mapper import MaskFormerPanopticDatasetMapper
from .mask_former_semantic_dataset_mapper import MaskFormerSemanticDatasetMapper

__all__ = [
    "DATASET_MAPPER_REGISTRY",
    "MAPPER_NAME_ALIASES",
    "build_train_mapper",
    "build_instance_augmentation",
    "build_lsj_augmentation",
    "build_semantic_augmentation",
    "COCOInstanceNewBaselineDatasetMapper",
    "COCOPanopticNewBaselineDatasetMapper",
    "MaskFormerInstanceDatasetMapper",
    "MaskFormerPanopticDatasetMapper",
    "MaskFormerSemanticDatasetMapper",
]
