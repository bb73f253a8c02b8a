"""Selection of the training dataset mapper by name (``INPUT.DATASET_MAPPER_NAME``)."""

from detectron2.data import DatasetMapper
from detectron2.utils.registry import Registry

__all__ = ["DATASET_MAPPER_REGISTRY", "build_train_mapper"]

DATASET_MAPPER_REGISTRY = Registry("DATASET_MAPPER")
DATASET_MAPPER_REGISTRY.__doc__ = """
Training dataset mappers selectable with ``INPUT.DATASET_MAPPER_NAME``. A registered object is
called as ``obj(cfg, is_train=True)`` and returns a callable that maps a dataset dict to the
model's input dict (e.g. a detectron2 ``@configurable`` mapper class).
"""


def build_train_mapper(cfg):
    """The training mapper named by ``cfg.INPUT.DATASET_MAPPER_NAME``; empty (the default)
    selects detectron2's :class:`DatasetMapper` (Panoptic FPN, Mask R-CNN, Faster R-CNN)."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if not name:
        return DatasetMapper(cfg, is_train=True)
    if name not in DATASET_MAPPER_REGISTRY:
        raise ValueError(
            f"INPUT.DATASET_MAPPER_NAME={name!r} is not registered; known: "
            f"{sorted(k for k, _ in DATASET_MAPPER_REGISTRY)} (or empty for DatasetMapper)"
        )
    return DATASET_MAPPER_REGISTRY.get(name)(cfg, is_train=True)
