"""Choice of the training dataset mapper by ``INPUT.DATASET_MAPPER_NAME``.

Mappers are registered under their class names; the lower-case names that upstream
Mask2Former's YAML files use are aliases of those (:data:`MAPPER_NAME_ALIASES`).
"""

from detectron2.data import DatasetMapper
from detectron2.utils.registry import Registry

__all__ = ["DATASET_MAPPER_REGISTRY", "MAPPER_NAME_ALIASES", "build_train_mapper"]

DATASET_MAPPER_REGISTRY = Registry("DATASET_MAPPER")
DATASET_MAPPER_REGISTRY.__doc__ = """
Training dataset mappers selectable with ``INPUT.DATASET_MAPPER_NAME``. A registered object is
called as ``obj(cfg, is_train=True)`` and returns a callable that maps a detectron2 dataset dict
to the model's input dict (e.g. a ``@configurable`` mapper class).
"""

# Upstream Mask2Former mapper names (as written in its YAML files) -> registered class names.
MAPPER_NAME_ALIASES = {
    "mask_former_semantic": "MaskFormerSemanticDatasetMapper",
    "mask_former_panoptic": "MaskFormerPanopticDatasetMapper",
    "mask_former_instance": "MaskFormerInstanceDatasetMapper",
    "coco_instance_lsj": "COCOInstanceNewBaselineDatasetMapper",
    "coco_panoptic_lsj": "COCOPanopticNewBaselineDatasetMapper",
}


def build_train_mapper(cfg):
    """The training mapper named by ``cfg.INPUT.DATASET_MAPPER_NAME``.

    An empty name selects detectron2's :class:`DatasetMapper` (Panoptic FPN, Mask R-CNN, ...);
    otherwise the name is a registered class name or one of :data:`MAPPER_NAME_ALIASES`.

    Raises:
        ValueError: for a name that is neither registered nor an alias.
    """
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if not name:
        return DatasetMapper(cfg, is_train=True)
    registered = MAPPER_NAME_ALIASES.get(name, name)
    if registered not in DATASET_MAPPER_REGISTRY:
        known = sorted(set(MAPPER_NAME_ALIASES) | {k for k, _ in DATASET_MAPPER_REGISTRY})
        raise ValueError(
            f"INPUT.DATASET_MAPPER_NAME: unknown mapper {name!r}; expected one of {known} "
            "(or empty for detectron2's DatasetMapper)"
        )
    return DATASET_MAPPER_REGISTRY.get(registered)(cfg, is_train=True)
