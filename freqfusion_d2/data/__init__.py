"""Datasets (registration), mappers and dataset preparation helpers. Never imports modeling."""

from . import datasets  # noqa: F401  (registers the synthetic dataset)
from .dataset_mappers import DATASET_MAPPER_REGISTRY, build_train_mapper
from .datasets import check_dataset_files, dataset_root

__all__ = ["DATASET_MAPPER_REGISTRY", "build_train_mapper", "check_dataset_files", "dataset_root"]
