#!/usr/bin/env python
"""Detectron2-style ADE20K semantic labels: annotations_detectron2/{training,validation}/*.png.

    python datasets/prepare_ade20k_sem_seg.py

ADE20K's raw labels are 0 (other) and 1..150; detectron2's ``ade20k_sem_seg_{train,val}``
datasets expect 0..149 with 255 for "other", which this script writes.
"""

import argparse
import logging
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

from freqfusion_d2.data import dataset_root


def convert(args):
    src, dst = args
    labels = np.asarray(Image.open(src)).astype(np.int64)
    Image.fromarray(np.where(labels == 0, 255, labels - 1).astype(np.uint8)).save(dst)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", default=None, help="default: $DETECTRON2_DATASETS/ADEChallengeData2016"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = args.root or os.path.join(dataset_root(), "ADEChallengeData2016")
    for split in ("training", "validation"):
        src_dir = os.path.join(root, "annotations", split)
        if not os.path.isdir(src_dir):
            raise SystemExit(
                f"{src_dir} not found: unzip ADEChallengeData2016.zip into {dataset_root()}"
            )
        dst_dir = os.path.join(root, "annotations_detectron2", split)
        os.makedirs(dst_dir, exist_ok=True)
        jobs = [
            (os.path.join(src_dir, n), os.path.join(dst_dir, n))
            for n in sorted(os.listdir(src_dir))
            if n.endswith(".png")
        ]
        with ProcessPoolExecutor(args.workers) as pool:
            list(pool.map(convert, jobs, chunksize=64))
        logging.info("%s: %d files", dst_dir, len(jobs))


if __name__ == "__main__":
    main()
