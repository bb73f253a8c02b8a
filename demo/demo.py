#!/usr/bin/env python
"""Panoptic / instance / semantic inference on images with detectron2's Visualizer.

    python demo/demo.py \
        --config-file configs/COCO-PanopticSegmentation/panoptic_fpn_R_50_1x_freqfusion.yaml \
        --input img1.jpg img2.jpg --output out/ --opts MODEL.WEIGHTS model_final.pth

Runs on the GPU when MODEL.DEVICE is cuda and one is present, else on the CPU. Writes one PNG
per input (same base name) into --output.
"""

import argparse
import glob
import logging
import os
import time

import cv2
import torch
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import ColorMode, Visualizer

from freqfusion_d2.engine import Predictor, confidence_threshold_opts, setup_cfg
from freqfusion_d2.engine.predictor import DEFAULT_CONFIDENCE

MODES = ("auto", "panoptic", "instance", "semantic")


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--input", nargs="+", required=True, help="images or glob patterns")
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
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides")
    args = parser.parse_args()
    setup_logger(name="freqfusion_d2")
    logger = setup_logger()
    cfg = setup_cfg(args.config_file, args.opts, freeze=False)
    try:
        cfg.merge_from_list(confidence_threshold_opts(cfg, args.confidence_threshold))
    except ValueError as e:
        raise SystemExit(str(e))
    cfg.freeze()
    threshold = args.confidence_threshold
    predictor = Predictor(cfg, DEFAULT_CONFIDENCE if threshold is None else threshold)
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    paths = sorted(
        {p for pattern in args.input for p in (glob.glob(os.path.expanduser(pattern)) or [pattern])}
    )
    os.makedirs(args.output, exist_ok=True)
    for path in paths:
        if not os.path.isfile(path):
            raise SystemExit(f"--input: {path} is not a file")
        image = read_image(path, format="BGR")
        start = time.time()
        with torch.no_grad():
            predictions = predictor(image)
        vis = draw(predictions, image[:, :, ::-1], metadata, args.mode, args.scale)
        out_path = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png")
        cv2.imwrite(out_path, vis[:, :, ::-1])
        n = len(predictions["instances"]) if "instances" in predictions else 0
        logger.info("%s: %d instances in %.2fs -> %s", path, n, time.time() - start, out_path)


if __name__ == "__main__":
    logging.captureWarnings(True)
    main()
