"""Instance-segmentation AP for mask-classification models (Mask2Former-style ``instances``)."""

import logging
from typing import Any, Dict, Iterable, List

from detectron2.evaluation import COCOEvaluator

__all__ = ["InstanceSegEvaluator"]

logger = logging.getLogger(__name__)


class _MetadataView:
    """Read-only view of a ``Metadata`` with some fields hidden."""

    def __init__(self, metadata, hidden: Iterable[str]):
        self._metadata = metadata
        self._hidden = frozenset(hidden)

    def __getattr__(self, name: str):
        if name in self._hidden:
            raise AttributeError(name)
        return getattr(self._metadata, name)

    def get(self, name: str, default=None):
        return default if name in self._hidden else self._metadata.get(name, default)


class InstanceSegEvaluator(COCOEvaluator):
    """``COCOEvaluator`` for models whose class ids index a joint thing+stuff label space.

    Mask2Former predicts ``instances`` (``pred_masks``, ``scores``, ``pred_classes``) with class
    ids in the contiguous space of *all* panoptic categories, so the thing ids are not ``0..K-1``
    and detectron2's ``COCOEvaluator`` rejects them. This subclass maps each predicted class back
    through ``thing_dataset_id_to_contiguous_id`` without that requirement. Predictions of classes
    outside the mapping (stuff) cannot match any instance annotation and are dropped, which does
    not change AP. Defaults to ``tasks=("segm",)`` since mask models' boxes are not meaningful.
    """

    def __init__(self, dataset_name, tasks=("segm",), distributed=True, output_dir=None, **kwargs):
        super().__init__(
            dataset_name, tasks=tasks, distributed=distributed, output_dir=output_dir, **kwargs
        )

    def _eval_predictions(self, predictions: List[Dict[str, Any]], img_ids=None):
        mapping = self._metadata.get("thing_dataset_id_to_contiguous_id")
        if mapping is None:
            return super()._eval_predictions(predictions, img_ids=img_ids)
        reverse = {v: k for k, v in mapping.items()}
        dropped = 0
        converted = []
        for pred in predictions:
            kept = []
            for inst in pred.get("instances", []):
                if inst["category_id"] in reverse:
                    kept.append(dict(inst, category_id=reverse[inst["category_id"]]))
                else:
                    dropped += 1
            converted.append(dict(pred, instances=kept))
        if dropped:
            logger.warning("Dropped %d instance predictions of non-thing classes.", dropped)
        metadata = self._metadata
        self._metadata = _MetadataView(metadata, hidden=("thing_dataset_id_to_contiguous_id",))
        try:
            return super()._eval_predictions(converted, img_ids=img_ids)
        finally:
            self._metadata = metadata
