"""The one place that picks evaluators for a dataset and a model."""

import logging
import os
from typing import List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, DatasetEvaluators

from .boundary_evaluation import BoundaryErrorEvaluator
from .instance_evaluation import InstanceSegEvaluator
from .panoptic_evaluation import COCOPanopticEvaluator
from .sem_seg_evaluation import build_sem_seg_evaluator, reduce_zero_label_loading_fn

__all__ = ["build_evaluator", "model_outputs"]

logger = logging.getLogger(__name__)

# detectron2 meta-architectures and what they output: (sem_seg, instances, panoptic_seg).
_D2_ARCH_OUTPUTS = {
    "PanopticFPN": (True, True, True),
    "GeneralizedRCNN": (False, True, False),
    "SemanticSegmentor": (True, False, False),
}

_PANOPTIC_TYPES = (
    "coco_panoptic_seg",
    "ade20k_panoptic_seg",
    "cityscapes_panoptic_seg",
    "mapillary_vistas_panoptic_seg",
)


def _cfg_get(node, key: str, default):
    """``node.key`` when declared, else ``default`` (the config may not declare it)."""
    if node is None:
        return default
    getter = getattr(node, "get", None)
    return getter(key, default) if getter is not None else getattr(node, key, default)


def model_outputs(cfg):
    """Which outputs the configured model produces at test time.

    detectron2's own meta-architectures are known; any other architecture with
    ``MODEL.MASK_FORMER.TEST`` follows Mask2Former's ``SEMANTIC_ON`` / ``INSTANCE_ON`` /
    ``PANOPTIC_ON`` flags (Mask2Former's defaults True / False / False where a flag is not
    declared); an unknown architecture without them is assumed to produce all three.

    Returns:
        ``(sem_seg, instances, panoptic_seg)`` booleans.
    """
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch in _D2_ARCH_OUTPUTS:
        return _D2_ARCH_OUTPUTS[arch]
    test = _cfg_get(_cfg_get(cfg.MODEL, "MASK_FORMER", None), "TEST", None)
    if test is None:
        return (True, True, True)
    return (
        bool(_cfg_get(test, "SEMANTIC_ON", True)),
        bool(_cfg_get(test, "INSTANCE_ON", False)),
        bool(_cfg_get(test, "PANOPTIC_ON", False)),
    )


def _boundary_settings(cfg):
    """``TEST.BOUNDARY_EVAL`` as (enabled, band_kernel); accepts a bool or a node."""
    node = _cfg_get(cfg.TEST, "BOUNDARY_EVAL", False)
    if isinstance(node, bool):
        return node, 15
    return bool(_cfg_get(node, "ENABLED", False)), int(_cfg_get(node, "BAND_KERNEL", 15))


def _has_sem_seg_gt(dataset_name: str, meta) -> bool:
    if meta.get("sem_seg_root") is not None:
        return True
    dicts = DatasetCatalog.get(dataset_name)
    return len(dicts) > 0 and "sem_seg_file_name" in dicts[0]


def build_evaluator(
    cfg, dataset_name: str, output_folder: Optional[str] = None
) -> DatasetEvaluators:
    """Evaluators for ``dataset_name`` given the model in ``cfg``.

    Dispatch on ``MetadataCatalog.get(dataset_name).evaluator_type`` and on what the model
    outputs (:func:`model_outputs`):

    * ``sem_seg``: ``SemSegEvaluator`` (mIoU, fwIoU, mACC, pACC).
    * ``coco``: ``COCOEvaluator`` (box and mask AP); for mask-classification models
      :class:`InstanceSegEvaluator` (mask AP).
    * panoptic types (``coco_panoptic_seg``, ``ade20k_panoptic_seg``,
      ``cityscapes_panoptic_seg``, ``mapillary_vistas_panoptic_seg``): PQ with
      :class:`COCOPanopticEvaluator` when the model outputs ``panoptic_seg``; AP when it outputs
      instances and the metadata has an instances ``json_file``; mIoU when it outputs
      ``sem_seg`` and the dataset has semantic GT (for Panoptic FPN that is the stuff map).
    * ``cityscapes_instance``, ``cityscapes_sem_seg``, ``lvis``, ``pascal_voc``: detectron2's
      evaluators for them.
    * With ``TEST.BOUNDARY_EVAL.ENABLED`` (undeclared = off): :class:`BoundaryErrorEvaluator`
      on the semantic (or, failing that, panoptic) output.

    Raw ADE20K semantic labels (0 = other) are reduced when the metadata has
    ``reduce_zero_label=True``.

    Args:
        cfg: the full config.
        dataset_name: a registered dataset.
        output_folder: where evaluators write predictions; default ``cfg.OUTPUT_DIR/inference``.

    Returns:
        A ``DatasetEvaluators`` (possibly of one evaluator).

    Raises:
        ValueError: when no evaluator applies to the dataset's ``evaluator_type``.
    """
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
    meta = MetadataCatalog.get(dataset_name)
    etype = meta.get("evaluator_type", None)
    sem_on, ins_on, pan_on = model_outputs(cfg)
    mask_former = cfg.MODEL.META_ARCHITECTURE not in _D2_ARCH_OUTPUTS
    has_sem_gt = None  # looked up lazily: it may load the dataset

    def sem_gt():
        nonlocal has_sem_gt
        if has_sem_gt is None:
            has_sem_gt = _has_sem_seg_gt(dataset_name, meta)
        return has_sem_gt

    def instance_evaluator() -> DatasetEvaluator:
        if mask_former:
            return InstanceSegEvaluator(dataset_name, output_dir=output_folder)
        return COCOEvaluator(dataset_name, output_dir=output_folder)

    evaluators: List[DatasetEvaluator] = []
    if etype == "sem_seg":
        evaluators.append(build_sem_seg_evaluator(dataset_name, output_folder))
    elif etype == "coco":
        evaluators.append(instance_evaluator())
    elif etype in _PANOPTIC_TYPES:
        if pan_on:
            evaluators.append(COCOPanopticEvaluator(dataset_name, output_folder))
        if ins_on and meta.get("json_file") is not None:
            if etype == "cityscapes_panoptic_seg":
                from detectron2.evaluation import CityscapesInstanceEvaluator

                evaluators.append(CityscapesInstanceEvaluator(dataset_name))
            else:
                evaluators.append(instance_evaluator())
        if sem_on and sem_gt():
            if etype == "cityscapes_panoptic_seg":
                from detectron2.evaluation import CityscapesSemSegEvaluator

                evaluators.append(CityscapesSemSegEvaluator(dataset_name))
            else:
                evaluators.append(build_sem_seg_evaluator(dataset_name, output_folder))
    elif etype == "cityscapes_instance":
        from detectron2.evaluation import CityscapesInstanceEvaluator

        evaluators.append(CityscapesInstanceEvaluator(dataset_name))
    elif etype == "cityscapes_sem_seg":
        from detectron2.evaluation import CityscapesSemSegEvaluator

        evaluators.append(CityscapesSemSegEvaluator(dataset_name))
    elif etype == "lvis":
        from detectron2.evaluation import LVISEvaluator

        evaluators.append(LVISEvaluator(dataset_name, output_dir=output_folder))
    elif etype == "pascal_voc":
        from detectron2.evaluation import PascalVOCDetectionEvaluator

        evaluators.append(PascalVOCDetectionEvaluator(dataset_name))

    boundary_on, band_kernel = _boundary_settings(cfg)
    if boundary_on and (sem_on or pan_on) and sem_gt():
        kwargs = {}
        if meta.get("reduce_zero_label", False):
            kwargs["sem_seg_loading_fn"] = reduce_zero_label_loading_fn(
                meta.get("ignore_label", 255)
            )
        evaluators.append(
            BoundaryErrorEvaluator(
                dataset_name,
                band_kernel=band_kernel,
                source="sem_seg" if sem_on else "panoptic",
                **kwargs,
            )
        )

    if not evaluators:
        raise ValueError(
            f"dataset_name: no evaluator for dataset {dataset_name!r} with evaluator_type "
            f"{etype!r} and model outputs (sem_seg={sem_on}, instances={ins_on}, "
            f"panoptic_seg={pan_on})"
        )
    logger.info(
        "Evaluators for %s: %s", dataset_name, ", ".join(type(e).__name__ for e in evaluators)
    )
    return DatasetEvaluators(evaluators)
