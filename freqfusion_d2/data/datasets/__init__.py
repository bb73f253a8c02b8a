"""Dataset registration; importing this registers the synthetic COCO dataset and the datasets
Mask2Former adds (COCO panoptic with semantic PNGs, ADE20K)."""

import os

from detectron2.data import DatasetCatalog

from . import register_maskformer  # noqa: F401  (COCO panoptic with semantic PNGs, ADE20K)
from .checks import check_dataset_files, dataset_root
from .synthetic_coco import (
    SYNTHETIC_COCO_CATEGORIES,
    SYNTHETIC_COCO_ROOT,
    get_synthetic_coco_metadata,
    register_synthetic_coco,
    synthetic_coco_paths,
)

__all__ = [
    "SYNTHETIC_COCO_CATEGORIES",
    "SYNTHETIC_COCO_ROOT",
    "check_dataset_files",
    "dataset_root",
    "get_synthetic_coco_metadata",
    "register_synthetic_coco",
    "synthetic_coco_paths",
]

if "synthetic_coco_2017_train" not in DatasetCatalog:
    register_synthetic_coco(os.path.join(dataset_root(), SYNTHETIC_COCO_ROOT))
