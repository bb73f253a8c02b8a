#!/usr/bin/env python
"""Generates the synthetic COCO-format dataset under $DETECTRON2_DATASETS/synthetic_coco.

Usage: python datasets/prepare_synthetic_coco.py [--num-train 96] [--num-val 24] [--overwrite]

A bad argument is told in one line (--debug or FREQFUSION_DEBUG=1: traceback).
"""

import argparse
import logging
import os
import sys

from freqfusion_d2.data.datasets import SYNTHETIC_COCO_ROOT, dataset_root
from freqfusion_d2.data.synthetic import generate_synthetic_coco
from freqfusion_d2.utils.cli import InputError, add_debug_flag, check_output_dir, run_cli


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        default=None,
        help="output folder (default: " "$DETECTRON2_DATASETS/synthetic_coco)",
    )
    parser.add_argument("--num-train", type=int, default=96)
    parser.add_argument("--num-val", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("num_train", "num_val"):
        if getattr(args, name) < 1:
            option = "--" + name.replace("_", "-")
            raise InputError(option, str(getattr(args, name)), "at least 1 image")
    root = args.root or os.path.join(dataset_root(), SYNTHETIC_COCO_ROOT)
    if os.path.exists(root) and not os.path.isdir(root):
        raise InputError("--root", f"{root} is a file", "a folder for the dataset")
    check_output_dir("--root (its parent folder)", os.path.dirname(os.path.abspath(root)))
    generate_synthetic_coco(
        root,
        num_train=args.num_train,
        num_val=args.num_val,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
