#!/usr/bin/env python
"""Panoptic / instance / semantic inference on images with detectron2's Visualizer.

    python demo/demo.py \
        --config-file configs/COCO-PanopticSegmentation/panoptic_fpn_R_50_1x_freqfusion.yaml \
        --input img1.jpg img2.jpg folder/ "more/*.png" --output out/ \
        --opts MODEL.WEIGHTS model_final.pth

Runs on the GPU when MODEL.DEVICE is cuda and one is present, else on the CPU. Writes one PNG
per input (same base name) into --output. An input that is not a readable image is skipped with
a warning; the demo stops with a one-line error before building the model when no input is
readable (``--debug`` or FREQFUSION_DEBUG=1: traceback).
"""

import argparse
import glob
import logging
import os
import sys
import time

import cv2
import torch
from detectron2.data import MetadataCatalog
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import ColorMode, Visualizer

from freqfusion_d2.engine import Predictor, confidence_threshold_opts
from freqfusion_d2.engine.predictor import DEFAULT_CONFIDENCE
from freqfusion_d2.utils.cli import (
    InputError,
    add_debug_flag,
    check_checkpoint,
    check_output_dir,
    load_config,
    read_image,
    run_cli,
)

MODES = ("auto", "panoptic", "instance", "semantic")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

logger = logging.getLogger("freqfusion_d2.demo")


def draw(predictions, image_rgb, metadata, mode, scale=1.0):
    """Visualisation (RGB array) of one image's predictions, ``scale`` times the image size."""
    if mode == "auto":
        mode = next(
            m
            for m, key in (
                ("panoptic", "panoptic_seg"),
                ("instance", "instances"),
                ("semantic", "sem_seg"),
            )
            if key in predictions
        )
    vis = Visualizer(image_rgb, metadata, scale=scale, instance_mode=ColorMode.IMAGE)
    if mode == "panoptic":
        panoptic_seg, segments_info = predictions["panoptic_seg"]
        out = vis.draw_panoptic_seg(panoptic_seg.to("cpu"), segments_info)
    elif mode == "instance":
        out = vis.draw_instance_predictions(predictions["instances"].to("cpu"))
    else:
        out = vis.draw_sem_seg(predictions["sem_seg"].argmax(dim=0).to("cpu"))
    return out.get_image()


def input_paths(patterns):
    """The files named by ``--input``: files, the images of a folder, or glob matches."""
    paths = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if os.path.isdir(pattern):
            found = [
                os.path.join(pattern, n)
                for n in sorted(os.listdir(pattern))
                if n.lower().endswith(IMAGE_EXTENSIONS)
            ]
            if not found:
                raise InputError("--input", f"folder {pattern} holds no image files")
        elif os.path.exists(pattern):
            found = [pattern]
        else:
            found = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
            if not found:
                raise InputError(
                    "--input", f"{pattern} matches no file", "image files, folders or globs"
                )
        paths.extend(p for p in found if p not in paths)
    return paths


def readable_images(paths):
    """The paths that decode as images; the others are skipped with a warning (all of them
    unreadable: an InputError, the first one's)."""
    readable, first_error = [], None
    for path in paths:
        try:
            read_image("--input", path)
        except InputError as e:
            first_error = first_error or e
            if len(paths) > 1:
                logger.warning("Skipping %s", e)
            continue
        readable.append(path)
    if not readable:
        if len(paths) == 1:
            raise first_error
        raise InputError("--input", f"none of the {len(paths)} inputs is a readable image")
    return readable


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--input", nargs="+", required=True, help="images, folders or globs")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--mode", choices=MODES, default="auto")
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=None,
        help="minimum score of the instances drawn (default 0.5) and, for Mask2Former, of the "
        "panoptic segments (default: the config's MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD); "
        "rejected for semantic-segmentation-only models",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="output size / input size")
    add_debug_flag(parser)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides")
    args = parser.parse_args(argv)
    setup_logger(name="freqfusion_d2")
    setup_logger()

    # Every input is checked before the model is built.
    if args.scale <= 0:
        raise InputError("--scale", f"{args.scale}", "a positive number")
    cfg = load_config(args.config_file, args.opts, freeze=False)
    cfg.merge_from_list(confidence_threshold_opts(cfg, args.confidence_threshold))
    cfg.freeze()
    check_checkpoint("MODEL.WEIGHTS", cfg.MODEL.WEIGHTS)
    paths = readable_images(input_paths(args.input))
    check_output_dir("--output", args.output)

    threshold = args.confidence_threshold
    predictor = Predictor(cfg, DEFAULT_CONFIDENCE if threshold is None else threshold)
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    for path in paths:
        try:
            image = read_image("--input", path, format="BGR")
        except InputError as e:  # changed since it was checked
            logger.warning("Skipping %s", e)
            continue
        start = time.time()
        with torch.no_grad():
            predictions = predictor(image)
        vis = draw(predictions, image[:, :, ::-1], metadata, args.mode, args.scale)
        out_path = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png")
        cv2.imwrite(out_path, vis[:, :, ::-1])
        n = len(predictions["instances"]) if "instances" in predictions else 0
        logger.info("%s: %d instances in %.2fs -> %s", path, n, time.time() - start, out_path)
    return 0


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(run_cli(main))
