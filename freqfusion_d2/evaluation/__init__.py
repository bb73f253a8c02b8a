"""Evaluation: PQ without panopticapi, AP, mIoU and Seg-Aliasing boundary metrics.

``build_evaluator`` is the one place that picks evaluators for a dataset and model.

``pq_compute`` needs only numpy and Pillow; the evaluators, which need detectron2 and torch,
are imported on first access so that the PQ command line and its worker processes stay light.
"""

import importlib

from .panoptic import pq_compute

_LAZY = {
    "BoundaryErrorEvaluator": ".boundary_evaluation",
    "COCOPanopticEvaluator": ".panoptic_evaluation",
    "PanopticEvaluator": ".panoptic_evaluation",
    "InstanceSegEvaluator": ".instance_evaluation",
    "build_evaluator": ".build",
    "build_sem_seg_evaluator": ".sem_seg_evaluation",
    "reduce_zero_label": ".sem_seg_evaluation",
}

__all__ = [
    "BoundaryErrorEvaluator",
    "COCOPanopticEvaluator",
    "InstanceSegEvaluator",
    "PanopticEvaluator",
    "build_evaluator",
    "build_sem_seg_evaluator",
    "pq_compute",
    "reduce_zero_label",
]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
