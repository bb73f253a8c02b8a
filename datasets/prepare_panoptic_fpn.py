#!/usr/bin/env python
"""Semantic label PNGs from COCO panoptic annotations, for Panoptic FPN (and Mask2Former).

    python datasets/prepare_panoptic_fpn.py            # panoptic_stuff_{train,val}2017
    python datasets/prepare_panoptic_fpn.py --semseg   # also panoptic_semseg_{train,val}2017

Reads $DETECTRON2_DATASETS/coco/annotations/panoptic_{split}2017.json and the PNGs in
coco/panoptic_{split}2017/ (detectron2's layout, see datasets/README.md). Panoptic FPN's stuff
maps label every thing 0, the stuff classes 1..53 in category order and unlabeled pixels 255;
--semseg maps label all 133 classes 0..132 (Mask2Former's COCO panoptic training uses them).
A missing or malformed input is told in one line (--debug or FREQFUSION_DEBUG=1: traceback).
"""

import argparse
import logging
import os
import sys
import time

from freqfusion_d2.data import dataset_root
from freqfusion_d2.data.panoptic_conversion import (
    convert_panoptic_to_semantic,
    semseg_label_map,
    stuff_label_map,
)
from freqfusion_d2.utils.cli import InputError, add_debug_flag, check_dir, load_json, run_cli

DOWNLOAD = (
    "download and unzip COCO's panoptic annotations (panoptic_annotations_trainval2017.zip) "
    "as described in datasets/README.md"
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--coco", default=None, help="COCO folder (default: $DETECTRON2_DATASETS/coco)"
    )
    parser.add_argument("--splits", nargs="+", default=["train2017", "val2017"])
    parser.add_argument("--semseg", action="store_true", help="also write all-class label maps")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.workers < 1:
        raise InputError("--workers", str(args.workers), "a positive integer")
    coco = args.coco or os.path.join(dataset_root(), "coco")
    argument = "--coco" if args.coco else "--coco (default: $DETECTRON2_DATASETS/coco)"
    check_dir(argument, coco, "the COCO folder", hint=DOWNLOAD)
    for split in args.splits:
        pan_json = os.path.join(coco, "annotations", f"panoptic_{split}.json")
        pan_root = os.path.join(coco, f"panoptic_{split}")
        check_dir(argument, pan_root, f"coco/panoptic_{split} with the PNGs", hint=DOWNLOAD)
        categories = load_json(argument, pan_json, required_keys=("categories",))["categories"]
        outputs = [("panoptic_stuff", stuff_label_map(categories))]
        if args.semseg:
            outputs.append(("panoptic_semseg", semseg_label_map(categories)))
        for prefix, label_map in outputs:
            start = time.time()
            out = os.path.join(coco, f"{prefix}_{split}")
            n = convert_panoptic_to_semantic(pan_json, pan_root, out, label_map, args.workers)
            logging.info("%s: %d files in %.0f s", out, n, time.time() - start)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
