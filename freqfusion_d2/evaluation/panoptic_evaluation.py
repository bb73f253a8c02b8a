"""A ``COCOPanopticEvaluator`` that scores PQ with :func:`freqfusion_d2.evaluation.pq_compute`.

It accepts the same model outputs and metadata as ``detectron2.evaluation.COCOPanopticEvaluator``
and returns the same keys, but does not need ``panopticapi``.
"""

import io
import itertools
import json
import logging
import os
import tempfile
from collections import OrderedDict
from typing import Any, Dict, List, Optional

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from PIL import Image
from tabulate import tabulate

from .panoptic import id2rgb, pq_compute

__all__ = ["COCOPanopticEvaluator", "PanopticEvaluator", "pq_results_to_d2"]

logger = logging.getLogger(__name__)


def pq_results_to_d2(pq_res: Dict[str, Any]) -> Dict[str, float]:
    """Convert a :func:`pq_compute` result into detectron2's keys (percent)."""
    res = {}
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for key in ("pq", "sq", "rq"):
            res[key.upper() + suffix] = 100 * pq_res[group][key]
    return res


class COCOPanopticEvaluator(DatasetEvaluator):
    """Panoptic quality on a COCO-format panoptic dataset.

    The dataset's metadata must have ``panoptic_json`` and ``panoptic_root`` (the GT) and the
    ``thing_dataset_id_to_contiguous_id`` / ``stuff_dataset_id_to_contiguous_id`` mappings. Model
    outputs are ``output["panoptic_seg"] = (panoptic_img, segments_info)`` as in detectron2:

    * ``segments_info`` a list of ``{"id", "category_id", "isthing"?}``. With ``isthing`` the
      category id is contiguous and is mapped back to the dataset id through the thing or stuff
      mapping; without it the id is taken to be a dataset id already.
    * ``segments_info`` None: ``panoptic_img`` holds ``category * label_divisor + instance`` with
      -1 for VOID (``label_divisor`` from the metadata).

    Evaluation gathers the predictions to the main process (call it on every process) and returns
    ``{"panoptic_seg": {"PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"}}``
    in percent; the full :func:`pq_compute` result (with per-class values) is kept in
    ``self.pq_results``.
    """

    def __init__(
        self, dataset_name: str, output_dir: Optional[str] = None, num_workers: Optional[int] = None
    ):
        """
        Args:
            dataset_name: a registered panoptic dataset.
            output_dir: where to write ``predictions.json``; None keeps it in the temporary
                directory that holds the prediction PNGs during evaluation.
            num_workers: processes for :func:`pq_compute`; default: the CPU count.
        """
        self._metadata = MetadataCatalog.get(dataset_name)
        self._thing_contiguous_id_to_dataset_id = {
            v: k for k, v in self._metadata.get("thing_dataset_id_to_contiguous_id", {}).items()
        }
        self._stuff_contiguous_id_to_dataset_id = {
            v: k for k, v in self._metadata.get("stuff_dataset_id_to_contiguous_id", {}).items()
        }
        self._output_dir = output_dir
        self._num_workers = num_workers
        self.pq_results: Optional[Dict[str, Any]] = None
        if self._output_dir is not None:
            PathManager.mkdirs(self._output_dir)

    def reset(self):
        self._predictions: List[Dict[str, Any]] = []

    def _convert_category_id(self, segment_info: Dict[str, Any]) -> Dict[str, Any]:
        segment_info = dict(segment_info)
        isthing = segment_info.pop("isthing", None)
        if isthing is None:
            return segment_info
        mapping = (
            self._thing_contiguous_id_to_dataset_id
            if isthing
            else self._stuff_contiguous_id_to_dataset_id
        )
        cat = segment_info["category_id"]
        if cat not in mapping:
            kind = "thing" if isthing else "stuff"
            raise ValueError(
                f"outputs: segment {segment_info.get('id')} has {kind} category_id {cat}, which "
                f"is not a contiguous {kind} id of dataset {self._metadata.name!r}"
            )
        segment_info["category_id"] = mapping[cat]
        return segment_info

    def _segments_from_label_divisor(self, panoptic_img: np.ndarray):
        label_divisor = self._metadata.label_divisor
        thing_ids = set(self._metadata.get("thing_dataset_id_to_contiguous_id", {}).values())
        segments_info = []
        for label in np.unique(panoptic_img):
            if label == -1:
                continue
            pred_class = int(label) // label_divisor
            segments_info.append(
                {
                    "id": int(label) + 1,
                    "category_id": pred_class,
                    "isthing": pred_class in thing_ids,
                }
            )
        # Shift so that VOID (-1) becomes 0, the PNG convention.
        return panoptic_img + 1, segments_info

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            panoptic_img, segments_info = out["panoptic_seg"]
            panoptic_img = np.asarray(panoptic_img.cpu().numpy()).astype(np.int64)
            if segments_info is None:
                panoptic_img, segments_info = self._segments_from_label_divisor(panoptic_img)
            file_name = os.path.splitext(os.path.basename(inp["file_name"]))[0] + ".png"
            with io.BytesIO() as buf:
                Image.fromarray(id2rgb(panoptic_img)).save(buf, format="PNG")
                png = buf.getvalue()
            self._predictions.append(
                {
                    "image_id": inp["image_id"],
                    "file_name": file_name,
                    "png_string": png,
                    "segments_info": [
                        _to_builtin(self._convert_category_id(s)) for s in segments_info
                    ],
                }
            )

    def evaluate(self):
        comm.synchronize()
        predictions = list(itertools.chain(*comm.gather(self._predictions)))
        if not comm.is_main_process():
            return None

        gt_json = PathManager.get_local_path(self._metadata.panoptic_json)
        gt_folder = PathManager.get_local_path(self._metadata.panoptic_root)
        with tempfile.TemporaryDirectory(prefix="panoptic_eval") as pred_dir:
            logger.info("Writing %d panoptic predictions to %s", len(predictions), pred_dir)
            annotations = []
            for p in predictions:
                with open(os.path.join(pred_dir, p["file_name"]), "wb") as f:
                    f.write(p["png_string"])
                annotations.append({k: v for k, v in p.items() if k != "png_string"})
            with open(gt_json, "r") as f:
                json_data = json.load(f)
            json_data["annotations"] = annotations
            json_dir = self._output_dir if self._output_dir is not None else pred_dir
            predictions_json = os.path.join(json_dir, "predictions.json")
            with PathManager.open(predictions_json, "w") as f:
                f.write(json.dumps(json_data))
            self.pq_results = pq_compute(
                gt_json,
                PathManager.get_local_path(predictions_json),
                gt_folder=gt_folder,
                pred_folder=pred_dir,
                num_workers=self._num_workers,
            )

        _log_panoptic_results(self.pq_results)
        return OrderedDict({"panoptic_seg": pq_results_to_d2(self.pq_results)})


PanopticEvaluator = COCOPanopticEvaluator


def _to_builtin(x):
    """numpy scalars -> Python scalars, so the predictions serialise to JSON."""
    if isinstance(x, dict):
        return {k: _to_builtin(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_builtin(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _log_panoptic_results(pq_res: Dict[str, Any]) -> None:
    rows = [
        [name] + [100 * pq_res[name][k] for k in ("pq", "sq", "rq")] + [pq_res[name]["n"]]
        for name in ("All", "Things", "Stuff")
    ]
    table = tabulate(
        rows,
        headers=["", "PQ", "SQ", "RQ", "#categories"],
        tablefmt="pipe",
        floatfmt=".3f",
        stralign="center",
        numalign="center",
    )
    logger.info("Panoptic Evaluation Results:\n" + table)
