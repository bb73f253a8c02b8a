#!/usr/bin/env python
"""Semantic PNGs with all 133 COCO panoptic classes for ``coco_2017_*_panoptic_with_sem_seg``.

Reads ``$DETECTRON2_DATASETS/coco/annotations/panoptic_{split}2017.json`` and the PNGs in
``coco/panoptic_{split}2017`` and writes ``coco/panoptic_semseg_{split}2017/<same name>.png``:
each pixel holds the position of its segment's category in detectron2's ``COCO_CATEGORIES``
(0..79 things, 80..132 stuff), or 255 where no segment is. Crowd segments keep their class.

Usage::

    python datasets/prepare_coco_semantic_from_panoptic.py [--root DIR] [--splits train val]
        [--workers N]

A missing or malformed input is told in one line (--debug or FREQFUSION_DEBUG=1: traceback).
"""

import argparse
import logging
import os
import sys
from typing import List, Optional

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from freqfusion_d2.data.panoptic_conversion import convert_panoptic_to_semantic, semseg_label_map
from freqfusion_d2.utils.cli import InputError, add_debug_flag, check_dir, load_json, run_cli

DOWNLOAD = "download and unzip COCO's panoptic annotations as described in datasets/README.md"

logger = logging.getLogger("prepare_coco_semantic_from_panoptic")


def convert_split(root: str, split: str, workers: int = 1) -> int:
    """Converts one split (``"train"`` or ``"val"``); returns the number of PNGs written."""
    json_file = os.path.join(root, "coco", "annotations", f"panoptic_{split}2017.json")
    panoptic_dir = os.path.join(root, "coco", f"panoptic_{split}2017")
    out_dir = os.path.join(root, "coco", f"panoptic_semseg_{split}2017")
    check_dir("--root", panoptic_dir, f"coco/panoptic_{split}2017 PNGs", hint=DOWNLOAD)
    load_json("--root", json_file, required_keys=("annotations", "categories"))
    # Labels are positions in COCO_CATEGORIES; pixels in no segment get 255 (the default).
    count = convert_panoptic_to_semantic(
        json_file,
        panoptic_dir,
        out_dir,
        semseg_label_map(COCO_CATEGORIES),
        num_workers=workers if workers > 1 else 0,
    )
    logger.info("%s: wrote %d label maps to %s", split, count, out_dir)
    return count


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root",
        default=os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")),
        help="folder holding coco/ (default: $DETECTRON2_DATASETS or 'datasets')",
    )
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val"])
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1) // 2))
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.workers < 1:
        raise InputError("--workers", str(args.workers), "a positive integer")
    for split in args.splits:
        convert_split(args.root, split, args.workers)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(run_cli(main))
