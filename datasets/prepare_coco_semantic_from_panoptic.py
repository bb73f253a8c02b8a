#!/usr/bin/env python
"""Semantic PNGs with all 133 COCO panoptic classes for ``coco_2017_*_panoptic_with_sem_seg``.

Reads ``$DETECTRON2_DATASETS/coco/annotations/panoptic_{split}2017.json`` and the PNGs in
``coco/panoptic_{split}2017`` and writes ``coco/panoptic_semseg_{split}2017/<same name>.png``:
each pixel holds the position of its segment's category in detectron2's ``COCO_CATEGORIES``
(0..79 things, 80..132 stuff), or 255 where no segment is. Crowd segments keep their class.

Usage::

    python datasets/prepare_coco_semantic_from_panoptic.py [--root DIR] [--splits train val]
        [--workers N]
"""

import argparse
import functools
import json
import logging
import multiprocessing as mp
import os
from typing import Dict, List, Optional

import numpy as np
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from PIL import Image

from freqfusion_d2.data.dataset_mappers.utils import rgb2id

logger = logging.getLogger("prepare_coco_semantic_from_panoptic")

IGNORE_LABEL = 255


def category_to_label() -> Dict[int, int]:
    """COCO category id -> semantic label (its index in ``COCO_CATEGORIES``)."""
    return {c["id"]: i for i, c in enumerate(COCO_CATEGORIES)}


def panoptic_to_semantic(panoptic: np.ndarray, segments_info: List[dict]) -> np.ndarray:
    """(H, W, 3) panoptic PNG colours and their segments to an (H, W) uint8 label map."""
    labels = category_to_label()
    ids = rgb2id(panoptic)
    out = np.full(ids.shape, IGNORE_LABEL, dtype=np.uint8)
    for segment in segments_info:
        if segment["category_id"] not in labels:
            raise ValueError(f"segments_info: unknown COCO category id {segment['category_id']}")
        out[ids == segment["id"]] = labels[segment["category_id"]]
    return out


def _convert_one(annotation: dict, panoptic_dir: str, out_dir: str) -> None:
    name = annotation["file_name"]
    panoptic = np.asarray(Image.open(os.path.join(panoptic_dir, name)).convert("RGB"))
    semantic = panoptic_to_semantic(panoptic, annotation["segments_info"])
    Image.fromarray(semantic).save(os.path.join(out_dir, name))


def convert_split(root: str, split: str, workers: int = 1) -> int:
    """Converts one split (``"train"`` or ``"val"``); returns the number of PNGs written."""
    json_file = os.path.join(root, "coco", "annotations", f"panoptic_{split}2017.json")
    panoptic_dir = os.path.join(root, "coco", f"panoptic_{split}2017")
    out_dir = os.path.join(root, "coco", f"panoptic_semseg_{split}2017")
    for path in (json_file, panoptic_dir):
        if not os.path.exists(path):
            raise FileNotFoundError(f"COCO panoptic data not found: {path!r}")
    with open(json_file) as f:
        annotations = json.load(f)["annotations"]
    os.makedirs(out_dir, exist_ok=True)
    convert = functools.partial(_convert_one, panoptic_dir=panoptic_dir, out_dir=out_dir)
    if workers > 1:
        with mp.Pool(processes=workers) as pool:
            pool.map(convert, annotations, chunksize=64)
    else:
        for annotation in annotations:
            convert(annotation)
    logger.info("%s: wrote %d label maps to %s", split, len(annotations), out_dir)
    return len(annotations)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root",
        default=os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")),
        help="folder holding coco/ (default: $DETECTRON2_DATASETS or 'datasets')",
    )
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val"])
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1) // 2))
    args = parser.parse_args(argv)
    for split in args.splits:
        convert_split(args.root, split, args.workers)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
