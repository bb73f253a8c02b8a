"""Conversion of COCO panoptic annotations into semantic label maps."""

import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, Iterable, List, Mapping

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

__all__ = [
    "rgb_to_id",
    "id_to_rgb",
    "stuff_label_map",
    "semseg_label_map",
    "panoptic_to_semantic",
    "convert_panoptic_to_semantic",
]


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """Segment ids of a COCO panoptic PNG: ``R + 256 * G + 256**2 * B``.

    Args:
        rgb: (H, W, 3) uint8.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb (panoptic PNG color) must be (H, W, 3), got shape {rgb.shape}")
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_id`: (H, W) ids below 256**3 -> (H, W, 3) uint8."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= 256**3:
        raise ValueError("ids must lie in [0, 256**3)")
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def stuff_label_map(categories: Iterable[Mapping]) -> Dict[int, int]:
    """Labels of Panoptic FPN's semantic branch: every thing -> 0, stuff -> 1..S in the order
    of ``categories`` (COCO: 53 stuff classes)."""
    mapping, next_label = {}, 1
    for cat in categories:
        if cat["isthing"]:
            mapping[cat["id"]] = 0
        else:
            mapping[cat["id"]] = next_label
            next_label += 1
    return mapping


def semseg_label_map(categories: Iterable[Mapping]) -> Dict[int, int]:
    """Labels of a plain semantic segmentation over all classes: the i-th category -> i."""
    return {cat["id"]: i for i, cat in enumerate(categories)}


def panoptic_to_semantic(
    panoptic_rgb: np.ndarray,
    segments_info: List[Mapping],
    label_map: Mapping[int, int],
    ignore_label: int = 255,
) -> np.ndarray:
    """Semantic labels of one panoptic annotation; unlabeled pixels get ``ignore_label``.

    Args:
        panoptic_rgb: (H, W, 3) uint8 panoptic PNG.
        segments_info: the annotation's segments (``id`` and ``category_id`` used).
        label_map: category id -> label, e.g. from :func:`stuff_label_map`.
        ignore_label: label of pixels in no segment.

    Returns:
        (H, W) uint8 labels.
    """
    ids = rgb_to_id(panoptic_rgb)
    out = np.full(ids.shape, ignore_label, dtype=np.uint8)
    for seg in segments_info:
        if seg["category_id"] not in label_map:
            raise ValueError(f"category_id {seg['category_id']} is not in label_map")
        out[ids == seg["id"]] = label_map[seg["category_id"]]
    return out


def _convert_one(args):
    panoptic_path, segments_info, label_map, out_path = args
    rgb = np.asarray(Image.open(panoptic_path).convert("RGB"))
    Image.fromarray(panoptic_to_semantic(rgb, segments_info, label_map)).save(out_path)


def convert_panoptic_to_semantic(
    panoptic_json: str,
    panoptic_root: str,
    out_dir: str,
    label_map: Mapping[int, int],
    num_workers: int = 0,
) -> int:
    """Writes one semantic PNG per annotation of a COCO panoptic JSON.

    Args:
        panoptic_json: the panoptic JSON file.
        panoptic_root: folder of its panoptic PNGs.
        out_dir: output folder (created); files keep the PNG names.
        label_map: category id -> label.
        num_workers: processes to use (0: in this process).

    Returns:
        Number of files written.
    """
    for path in (panoptic_json, panoptic_root):
        if not os.path.exists(path):
            raise FileNotFoundError(f"panoptic annotations not found: {path}")
    with open(panoptic_json) as f:
        annotations = json.load(f)["annotations"]
    os.makedirs(out_dir, exist_ok=True)
    jobs = [
        (
            os.path.join(panoptic_root, ann["file_name"]),
            ann["segments_info"],
            dict(label_map),
            os.path.join(out_dir, ann["file_name"]),
        )
        for ann in annotations
    ]
    if num_workers > 0:
        with ProcessPoolExecutor(num_workers) as pool:
            list(pool.map(_convert_one, jobs, chunksize=64))
    else:
        for job in jobs:
            _convert_one(job)
    logger.info("Wrote %d semantic PNGs to %s", len(jobs), out_dir)
    return len(jobs)
