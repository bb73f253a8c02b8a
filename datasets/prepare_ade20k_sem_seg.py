#!/usr/bin/env python
"""Converts ADE20K (SceneParsing, ADEChallengeData2016) labels to the Detectron2 layout.

Reads ``$DETECTRON2_DATASETS/ADEChallengeData2016/annotations/{training,validation}/*.png``
(raw labels: 0 = "other", 1..150 = the classes) and writes
``ADEChallengeData2016/annotations_detectron2/{training,validation}/*.png`` with label v - 1 for
the classes (0..149) and 255 (the ignore value) for raw 0, as ``ade20k_sem_seg_{train,val}``
expect.

Usage::

    python datasets/prepare_ade20k_sem_seg.py [--root DIR]

A missing folder or an unreadable label map is told in one line (--debug or FREQFUSION_DEBUG=1:
traceback).
"""

import argparse
import logging
import os
import sys
from typing import List, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from freqfusion_d2.utils.cli import InputError, add_debug_flag, check_dir, run_cli

logger = logging.getLogger("prepare_ade20k_sem_seg")

SPLITS = ("training", "validation")
IGNORE_LABEL = 255


def convert_label(raw: np.ndarray) -> np.ndarray:
    """Raw ADE20K label map (uint8, 0..150) to the Detectron2 one (0..149, 255 = ignore)."""
    if raw.ndim != 2 or raw.dtype != np.uint8:
        raise ValueError(f"raw: expected a 2-D uint8 label map, got {raw.dtype} {raw.shape}")
    if raw.max(initial=0) > 150:
        raise ValueError(f"raw: labels must be in 0..150, found {int(raw.max())}")
    out = raw.astype(np.int16) - 1
    out[out < 0] = IGNORE_LABEL
    return out.astype(np.uint8)


def convert_split(ade_root: str, split: str) -> int:
    """Converts one split; returns the number of files written."""
    in_dir = os.path.join(ade_root, "annotations", split)
    out_dir = os.path.join(ade_root, "annotations_detectron2", split)
    check_dir(
        "--root",
        in_dir,
        "ADEChallengeData2016/annotations/{training,validation}",
        hint="unzip ADEChallengeData2016.zip from http://sceneparsing.csail.mit.edu/ into --root",
    )
    os.makedirs(out_dir, exist_ok=True)
    names = sorted(n for n in os.listdir(in_dir) if n.endswith(".png"))
    for name in names:
        path = os.path.join(in_dir, name)
        try:
            with Image.open(path) as img:
                raw = np.asarray(img)
            label = convert_label(raw)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise InputError(
                "--root", f"label map {path} cannot be converted ({e})", "raw ADE20K label PNGs"
            ) from e
        Image.fromarray(label).save(os.path.join(out_dir, name))
    logger.info("%s: wrote %d label maps to %s", split, len(names), out_dir)
    return len(names)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root",
        default=os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")),
        help="folder holding ADEChallengeData2016 (default: $DETECTRON2_DATASETS or 'datasets')",
    )
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    for split in SPLITS:
        convert_split(os.path.join(args.root, "ADEChallengeData2016"), split)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(run_cli(main))
