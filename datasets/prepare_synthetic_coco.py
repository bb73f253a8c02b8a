#!/usr/bin/env python
"""Generates the synthetic COCO-format dataset under $DETECTRON2_DATASETS/synthetic_coco.

Usage: python datasets/prepare_synthetic_coco.py [--num-train 96] [--num-val 24] [--overwrite]
"""

import argparse
import logging
import os

from freqfusion_d2.data.datasets import SYNTHETIC_COCO_ROOT, dataset_root
from freqfusion_d2.data.synthetic import generate_synthetic_coco


def main():
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
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = args.root or os.path.join(dataset_root(), SYNTHETIC_COCO_ROOT)
    generate_synthetic_coco(
        root,
        num_train=args.num_train,
        num_val=args.num_val,
        seed=args.seed,
        overwrite=args.overwrite,
    )


if __name__ == "__main__":
    main()
