"""Mask2Former training dataset mappers, chosen by ``INPUT.DATASET_MAPPER_NAME``.

All of them are training-only (evaluation uses detectron2's ``DatasetMapper``). The trainer
calls :func:`build_maskformer_mapper` when the name is a key of :data:`MASKFORMER_MAPPERS` and
otherwise falls back to its default mapper.
"""

from .augmentations import (
    build_instance_augmentation,
    build_lsj_augmentation,
    build_semantic_augmentation,
)
from .coco_instance_new_baseline_dataset_mapper import COCOInstanceNewBaselineDatasetMapper
from .coco_panoptic_new_baseline_dataset_mapper import COCOPanopticNewBaselineDatasetMapper
from .mask_former_instance_dataset_mapper import MaskFormerInstanceDatasetMapper
from .mask_former_panoptic_dataset_mapper import MaskFormerPanopticDatasetMapper
from .mask_former_semantic_dataset_mapper import MaskFormerSemanticDatasetMapper

__all__ = [
    "MASKFORMER_MAPPERS",
    "build_maskformer_mapper",
    "build_instance_augmentation",
    "build_lsj_augmentation",
    "build_semantic_augmentation",
    "COCOInstanceNewBaselineDatasetMapper",
    "COCOPanopticNewBaselineDatasetMapper",
    "MaskFormerInstanceDatasetMapper",
    "MaskFormerPanopticDatasetMapper",
    "MaskFormerSemanticDatasetMapper",
]

# INPUT.DATASET_MAPPER_NAME -> mapper class (the names upstream Mask2Former's train_net accepts).
MASKFORMER_MAPPERS = {
    "mask_former_semantic": MaskFormerSemanticDatasetMapper,
    "mask_former_panoptic": MaskFormerPanopticDatasetMapper,
    "mask_former_instance": MaskFormerInstanceDatasetMapper,
    "coco_instance_lsj": COCOInstanceNewBaselineDatasetMapper,
    "coco_panoptic_lsj": COCOPanopticNewBaselineDatasetMapper,
}


def build_maskformer_mapper(cfg, is_train: bool = True):
    """Builds the mapper named by ``cfg.INPUT.DATASET_MAPPER_NAME``.

    Args:
        cfg: config with the Mask2Former ``INPUT`` keys.
        is_train: must be True for every mapper here.

    Raises:
        ValueError: if the name is not a key of :data:`MASKFORMER_MAPPERS`.
    """
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in MASKFORMER_MAPPERS:
        raise ValueError(
            f"INPUT.DATASET_MAPPER_NAME: unknown mapper {name!r}; expected one of "
            f"{sorted(MASKFORMER_MAPPERS)}"
        )
    return MASKFORMER_MAPPERS[name](cfg, is_train)
