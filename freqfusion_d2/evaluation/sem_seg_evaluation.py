"""Semantic-segmentation helpers around detectron2's ``SemSegEvaluator`` (mIoU, fwIoU, mACC, pACC).

ADE20K convention: detectron2's ``prepare_ade20k_sem_seg.py`` layout stores labels already reduced,
``0..149`` with 255 for the "other" pixels, and needs nothing special. Raw ADEChallenge PNGs
(``0`` = other, ``1..150`` = classes) need the reduce-zero-label mapping ``0 -> ignore``,
``k -> k - 1``, which :func:`reduce_zero_label_loading_fn` applies while loading.
"""

from typing import Optional

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import SemSegEvaluator
from detectron2.evaluation.sem_seg_evaluation import load_image_into_numpy_array

__all__ = ["reduce_zero_label", "reduce_zero_label_loading_fn", "build_sem_seg_evaluator"]


def reduce_zero_label(labels: np.ndarray, ignore_label: int = 255) -> np.ndarray:
    """Map raw ADE20K labels (0 = other, 1..150) to ``0..149`` with ``0 -> ignore_label``.

    Pixels already equal to ``ignore_label`` stay ignored. Returns an int64 array.
    """
    labels = np.asarray(labels).astype(np.int64)
    out = labels - 1
    out[(labels == 0) | (labels == ignore_label)] = ignore_label
    return out


def reduce_zero_label_loading_fn(ignore_label: int = 255):
    """A ``sem_seg_loading_fn`` for ``SemSegEvaluator`` that applies :func:`reduce_zero_label`."""

    def load(filename: str, dtype=None) -> np.ndarray:
        labels = reduce_zero_label(load_image_into_numpy_array(filename), ignore_label)
        return labels.astype(dtype) if dtype is not None else labels

    return load


def build_sem_seg_evaluator(
    dataset_name: str, output_dir: Optional[str] = None, *, raw_ade_labels: Optional[bool] = None
) -> SemSegEvaluator:
    """``SemSegEvaluator`` for a dataset, with the raw-ADE20K label mapping when asked.

    Args:
        dataset_name: a registered dataset with ``sem_seg_file_name`` entries.
        output_dir: where ``SemSegEvaluator`` writes its predictions.
        raw_ade_labels: GT PNGs hold raw ADE labels (0 = other, 1..150). Default: the dataset
            metadata's ``reduce_zero_label`` (False when absent).
    """
    meta = MetadataCatalog.get(dataset_name)
    if raw_ade_labels is None:
        raw_ade_labels = bool(meta.get("reduce_zero_label", False))
    kwargs = {}
    if raw_ade_labels:
        kwargs["sem_seg_loading_fn"] = reduce_zero_label_loading_fn(meta.get("ignore_label", 255))
    return SemSegEvaluator(dataset_name, distributed=True, output_dir=output_dir, **kwargs)
