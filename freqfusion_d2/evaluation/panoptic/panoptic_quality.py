"""Panoptic Quality (PQ) without ``panopticapi``.

:func:`pq_compute` is a drop-in replacement for ``panopticapi.evaluation.pq_compute``: same
signature, same result dictionary and the same matching rules, so its numbers equal panopticapi's
up to floating-point summation order. It needs only numpy and Pillow.

Rules (Kirillov et al., "Panoptic Segmentation", CVPR 2019, as implemented by the COCO API):

* PNG colours encode segment ids as ``id = R + 256 * G + 256**2 * B``; id 0 is VOID.
* A ground-truth (GT) and a predicted segment of the same category match when
  ``IoU > 0.5``, where the union leaves out the predicted pixels that fall on VOID.
  Crowd GT segments (``iscrowd == 1``) never match.
* Unmatched non-crowd GT segments are false negatives (FN).
* An unmatched prediction is a false positive (FP) unless more than half of its area lies on
  VOID plus the crowd segment of its own category (if that image has one).
* GT segment areas come from the GT JSON ``area`` field (as panopticapi does); predicted areas
  are counted in the PNG.
* ``PQ = sum(IoU of TP) / (TP + FP/2 + FN/2)`` per category, ``SQ = sum(IoU) / TP``,
  ``RQ = TP / (TP + FP/2 + FN/2)``; categories with no TP, FP or FN are left out of the means.

Re-exported by :mod:`freqfusion_d2.evaluation.panoptic`; run
``python -m freqfusion_d2.evaluation.panoptic --help`` for the command line.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

__all__ = [
    "pq_compute",
    "pq_single_image",
    "rgb2id",
    "id2rgb",
    "format_pq_table",
    "PQStat",
    "VOID",
]

logger = logging.getLogger(__name__)

VOID = 0


def rgb2id(color: np.ndarray) -> np.ndarray:
    """Decode an ``(H, W, 3)`` (or ``(H, W, 4)``, alpha ignored) colour array to segment ids.

    Args:
        color: uint8-valued colour array.

    Returns:
        ``(H, W)`` uint32 array with ``id = R + 256 * G + 256**2 * B``.
    """
    color = np.asarray(color)
    if color.ndim != 3 or color.shape[2] not in (3, 4):
        raise ValueError(
            f"color: expected an (H, W, 3) or (H, W, 4) array, got shape {color.shape}"
        )
    color = color[..., :3].astype(np.uint32)
    return color[..., 0] + (color[..., 1] << 8) + (color[..., 2] << 16)


def id2rgb(id_map: np.ndarray) -> np.ndarray:
    """Encode an ``(H, W)`` array of segment ids in ``[0, 2**24)`` as an ``(H, W, 3)`` uint8 array.

    Args:
        id_map: integer array of non-negative segment ids.

    Returns:
        The colour array, the inverse of :func:`rgb2id`.
    """
    id_map = np.asarray(id_map)
    if id_map.ndim != 2 or not np.issubdtype(id_map.dtype, np.integer):
        raise ValueError(
            f"id_map: expected a 2-D integer array, got shape {id_map.shape} dtype {id_map.dtype}"
        )
    if id_map.size and (id_map.min() < 0 or id_map.max() >= 1 << 24):
        raise ValueError(
            f"id_map: segment ids must lie in [0, 2**24), got [{id_map.min()}, {id_map.max()}]"
        )
    ids = id_map.astype(np.uint32)
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8)


class PQStat:
    """Per-category sums (IoU of matches, TP, FP, FN) that add up over images and processes."""

    def __init__(self) -> None:
        self.per_cat: Dict[int, List[float]] = {}

    def add(self, category_id: int, iou: float = 0.0, tp: int = 0, fp: int = 0, fn: int = 0):
        """Add counts for one category."""
        entry = self.per_cat.setdefault(category_id, [0.0, 0, 0, 0])
        entry[0] += iou
        entry[1] += tp
        entry[2] += fp
        entry[3] += fn

    def __iadd__(self, other: "PQStat") -> "PQStat":
        for cat, (iou, tp, fp, fn) in other.per_cat.items():
            self.add(cat, iou, tp, fp, fn)
        return self

    def pq_average(
        self, categories: Dict[int, Dict[str, Any]], isthing: Optional[bool]
    ) -> Tuple[Dict[str, float], Dict[int, Dict[str, float]]]:
        """Average PQ, SQ and RQ over the categories of one kind.

        Args:
            categories: category id -> category dict with an ``isthing`` field.
            isthing: True for things, False for stuff, None for all categories.

        Returns:
            ``({"pq", "sq", "rq", "n"}, {category_id: {"pq", "sq", "rq"}})``. ``n`` counts the
            categories with any TP, FP or FN; when it is 0 the means are 0.0 (panopticapi raises
            ZeroDivisionError there).
        """
        pq = sq = rq = 0.0
        n = 0
        per_class: Dict[int, Dict[str, float]] = {}
        for cat_id, cat in categories.items():
            if isthing is not None and (cat["isthing"] == 1) != isthing:
                continue
            iou, tp, fp, fn = self.per_cat.get(cat_id, (0.0, 0, 0, 0))
            if tp + fp + fn == 0:
                per_class[cat_id] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            denom = tp + 0.5 * fp + 0.5 * fn
            cls = {"pq": iou / denom, "sq": iou / tp if tp else 0.0, "rq": tp / denom}
            per_class[cat_id] = cls
            pq += cls["pq"]
            sq += cls["sq"]
            rq += cls["rq"]
        if n == 0:
            return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}, per_class
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def _read_id_png(path: str, what: str, image_id: Any) -> np.ndarray:
    if not os.path.isfile(path):
        raise ValueError(f"image {image_id!r}: {what} PNG {path!r} does not exist")
    with Image.open(path) as img:
        if img.mode not in ("RGB", "RGBA", "P"):
            raise ValueError(
                f"image {image_id!r}: {what} PNG {path!r} has mode {img.mode!r}; "
                "expected an RGB image of 24-bit segment ids"
            )
        if img.mode != "RGB":
            img = img.convert("RGB")
        return rgb2id(np.asarray(img))


def _index_segments(
    ann: Dict[str, Any], categories: Dict[int, Any], image_id: Any, what: str
) -> Dict[int, Dict[str, Any]]:
    segments: Dict[int, Dict[str, Any]] = {}
    for seg in ann.get("segments_info", []):
        seg_id = seg["id"]
        if seg_id == VOID:
            raise ValueError(
                f"image {image_id!r}: {what} segment id {VOID} is reserved for VOID pixels"
            )
        if seg_id in segments:
            raise ValueError(f"image {image_id!r}: duplicate {what} segment id {seg_id}")
        if seg["category_id"] not in categories:
            raise ValueError(
                f"image {image_id!r}: {what} segment {seg_id} has unknown category_id "
                f"{seg['category_id']}"
            )
        segments[seg_id] = seg
    return segments


def _check_ids(
    png_ids: Iterable[int], segments: Dict[int, Any], image_id: Any, what: str, png: str
) -> None:
    png_ids = set(int(i) for i in png_ids) - {VOID}
    extra = sorted(png_ids - set(segments))
    if extra:
        raise ValueError(
            f"image {image_id!r}: {what} segment id(s) {extra} appear in {png!r} but not in the "
            "JSON segments_info"
        )
    missing = sorted(set(segments) - png_ids)
    if missing:
        raise ValueError(
            f"image {image_id!r}: {what} segment id(s) {missing} are in the JSON segments_info "
            f"but have no pixels in {png!r}"
        )


def _pair_counts(gt_map: np.ndarray, pred_map: np.ndarray) -> Dict[Tuple[int, int], int]:
    """Pixel counts of every (gt id, pred id) pair present in the image."""
    # Ids are below 2**24, so one 48-bit key per pixel and a single sort find all pairs.
    key = (gt_map.astype(np.uint64) << np.uint64(24)) | pred_map.astype(np.uint64)
    keys, counts = np.unique(key.reshape(-1), return_counts=True)
    gt_ids = (keys >> np.uint64(24)).tolist()
    pred_ids = (keys & np.uint64(0xFFFFFF)).tolist()
    return {(g, p): c for g, p, c in zip(gt_ids, pred_ids, counts.tolist())}


def pq_single_image(
    gt_ann: Dict[str, Any],
    pred_ann: Dict[str, Any],
    gt_folder: str,
    pred_folder: str,
    categories: Dict[int, Dict[str, Any]],
    strict_gt: bool = True,
) -> PQStat:
    """PQ counts of one image.

    Args:
        gt_ann, pred_ann: the image's entries of the GT and prediction ``annotations`` lists.
        gt_folder, pred_folder: folders holding their PNGs (``file_name``).
        categories: category id -> category dict, from the GT JSON.
        strict_gt: also validate the GT (ids in the PNG and the JSON must agree). With False the
            GT is read as leniently as panopticapi reads it.

    Returns:
        The image's :class:`PQStat`.

    Raises:
        ValueError: on malformed input, naming the image and segment.
    """
    image_id = gt_ann["image_id"]
    gt_png = os.path.join(gt_folder, gt_ann["file_name"])
    pred_png = os.path.join(pred_folder, pred_ann["file_name"])
    gt_segms = _index_segments(gt_ann, categories, image_id, "ground-truth")
    pred_segms = _index_segments(pred_ann, categories, image_id, "predicted")
    gt_map = _read_id_png(gt_png, "ground-truth", image_id)
    pred_map = _read_id_png(pred_png, "predicted", image_id)
    if gt_map.shape != pred_map.shape:
        raise ValueError(
            f"image {image_id!r}: predicted PNG {pred_png!r} has size {pred_map.shape[::-1]} "
            f"(W, H) but the ground truth {gt_png!r} has {gt_map.shape[::-1]}"
        )

    pairs = _pair_counts(gt_map, pred_map)
    pred_area: Dict[int, int] = {}
    gt_png_area: Dict[int, int] = {}
    for (g, p), c in pairs.items():
        pred_area[p] = pred_area.get(p, 0) + c
        gt_png_area[g] = gt_png_area.get(g, 0) + c
    _check_ids(pred_area, pred_segms, image_id, "predicted", pred_png)
    if strict_gt:
        _check_ids(gt_png_area, gt_segms, image_id, "ground-truth", gt_png)

    def gt_area(g: int) -> int:
        area = gt_segms[g].get("area")
        return int(area) if area is not None else gt_png_area.get(g, 0)

    stat = PQStat()
    gt_matched, pred_matched = set(), set()
    for (g, p), inter in sorted(pairs.items()):
        if g not in gt_segms or p not in pred_segms:
            continue
        gt_seg, pred_seg = gt_segms[g], pred_segms[p]
        if gt_seg.get("iscrowd", 0) == 1 or gt_seg["category_id"] != pred_seg["category_id"]:
            continue
        union = pred_area[p] + gt_area(g) - inter - pairs.get((VOID, p), 0)
        iou = inter / union
        if iou > 0.5:
            stat.add(gt_seg["category_id"], iou=iou, tp=1)
            gt_matched.add(g)
            pred_matched.add(p)

    # panopticapi keeps one crowd region per category: the last one listed.
    crowd_by_cat: Dict[int, int] = {}
    for g, gt_seg in gt_segms.items():
        if g in gt_matched:
            continue
        if gt_seg.get("iscrowd", 0) == 1:
            crowd_by_cat[gt_seg["category_id"]] = g
            continue
        stat.add(gt_seg["category_id"], fn=1)

    for p, pred_seg in pred_segms.items():
        if p in pred_matched:
            continue
        ignored = pairs.get((VOID, p), 0)
        crowd = crowd_by_cat.get(pred_seg["category_id"])
        if crowd is not None:
            ignored += pairs.get((crowd, p), 0)
        if ignored / pred_area[p] > 0.5:
            continue
        stat.add(pred_seg["category_id"], fp=1)
    return stat


def _pq_chunk(args) -> PQStat:
    pairs, gt_folder, pred_folder, categories, strict_gt = args
    stat = PQStat()
    for gt_ann, pred_ann in pairs:
        stat += pq_single_image(gt_ann, pred_ann, gt_folder, pred_folder, categories, strict_gt)
    return stat


def _strip_json(path: str) -> str:
    return path[: -len(".json")] if path.endswith(".json") else path


def format_pq_table(results: Dict[str, Any]) -> str:
    """Format a :func:`pq_compute` result as panopticapi's text table (values in percent)."""
    lines = ["{:10s}| {:>5s}  {:>5s}  {:>5s} {:>5s}".format("", "PQ", "SQ", "RQ", "N")]
    lines.append("-" * (10 + 7 * 4))
    for name in ("All", "Things", "Stuff"):
        r = results[name]
        lines.append(
            "{:10s}| {:5.1f}  {:5.1f}  {:5.1f} {:5d}".format(
                name, 100 * r["pq"], 100 * r["sq"], 100 * r["rq"], r["n"]
            )
        )
    return "\n".join(lines)


def _match_annotations(gt_json: Dict[str, Any], pred_json: Dict[str, Any]):
    pred_by_image: Dict[Any, Dict[str, Any]] = {}
    for ann in pred_json["annotations"]:
        if ann["image_id"] in pred_by_image:
            raise ValueError(
                f"pred_json_file: image {ann['image_id']!r} has more than one prediction"
            )
        pred_by_image[ann["image_id"]] = ann
    matched = []
    for gt_ann in gt_json["annotations"]:
        image_id = gt_ann["image_id"]
        if image_id not in pred_by_image:
            raise ValueError(f"pred_json_file: no prediction for the image with id {image_id!r}")
        matched.append((gt_ann, pred_by_image[image_id]))
    return matched


def _chunks(items: Sequence, size: int) -> List[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def pq_compute(
    gt_json_file: str,
    pred_json_file: str,
    gt_folder: Optional[str] = None,
    pred_folder: Optional[str] = None,
    num_workers: Optional[int] = None,
    *,
    strict_gt: bool = True,
    mp_context: Optional[str] = None,
) -> Dict[str, Any]:
    """Compute panoptic quality, as ``panopticapi.evaluation.pq_compute`` does.

    Args:
        gt_json_file: COCO panoptic GT JSON (``annotations``, ``categories`` with ``isthing``).
        pred_json_file: prediction JSON with one ``annotations`` entry per GT image.
        gt_folder: folder of GT PNGs; default: ``gt_json_file`` without ``.json``.
        pred_folder: folder of predicted PNGs; default: ``pred_json_file`` without ``.json``.
        num_workers: number of worker processes; default ``os.cpu_count()``. With 1 the images
            are evaluated in this process. Images are read one at a time in each worker.
        strict_gt: validate the GT as strictly as the predictions (see :func:`pq_single_image`).
        mp_context: multiprocessing start method; default "fork" where available, else "spawn".

    Returns:
        ``{"All": {...}, "Things": {...}, "Stuff": {...}, "per_class": {...}}``, where the first
        three hold ``pq``, ``sq``, ``rq`` (fractions) and ``n`` (number of categories counted),
        and ``per_class`` maps each category id to its ``pq``, ``sq``, ``rq``.

    Raises:
        ValueError: on missing folders or predictions and on malformed segments (unknown
            category ids, duplicate or VOID segment ids, ids in the JSON but not the PNG or the
            other way round, PNG size mismatches), naming the image and segment.
    """
    start = time.perf_counter()
    with open(gt_json_file, "r") as f:
        gt_json = json.load(f)
    with open(pred_json_file, "r") as f:
        pred_json = json.load(f)
    gt_folder = _strip_json(gt_json_file) if gt_folder is None else gt_folder
    pred_folder = _strip_json(pred_json_file) if pred_folder is None else pred_folder
    if not os.path.isdir(gt_folder):
        raise ValueError(f"gt_folder: {gt_folder!r} is not a directory")
    if not os.path.isdir(pred_folder):
        raise ValueError(f"pred_folder: {pred_folder!r} is not a directory")

    categories = {cat["id"]: cat for cat in gt_json["categories"]}
    for cat in categories.values():
        if "isthing" not in cat:
            raise ValueError(f"gt_json_file: category {cat['id']} has no 'isthing' field")
    matched = _match_annotations(gt_json, pred_json)
    del gt_json, pred_json

    if num_workers is None:
        num_workers = os.cpu_count() or 1
    if num_workers < 1:
        raise ValueError(f"num_workers: expected a positive integer, got {num_workers}")
    num_workers = max(1, min(num_workers, len(matched)))
    chunk_size = max(1, min(50, -(-len(matched) // (4 * num_workers))))
    tasks = [
        (chunk, gt_folder, pred_folder, categories, strict_gt)
        for chunk in _chunks(matched, chunk_size)
    ]
    logger.info(
        "Evaluating PQ on %d images with %d process(es): GT %s, predictions %s",
        len(matched),
        num_workers,
        gt_folder,
        pred_folder,
    )

    pq_stat = PQStat()
    if num_workers == 1:
        for task in tasks:
            pq_stat += _pq_chunk(task)
    else:
        if mp_context is None:
            methods = multiprocessing.get_all_start_methods()
            mp_context = "fork" if "fork" in methods else "spawn"
        ctx = multiprocessing.get_context(mp_context)
        with ctx.Pool(processes=num_workers) as pool:
            # imap keeps the chunk order, so the float sums do not depend on scheduling.
            for chunk_stat in pool.imap(_pq_chunk, tasks):
                pq_stat += chunk_stat

    results: Dict[str, Any] = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        results[name], per_class = pq_stat.pq_average(categories, isthing=isthing)
        if name == "All":
            results["per_class"] = per_class
    logger.info(
        "Panoptic evaluation done in %.2f s:\n%s",
        time.perf_counter() - start,
        format_pq_table(results),
    )
    return results
