#!/usr/bin/env python
"""Export a model to ONNX or TorchScript, run the exported file and compare it with PyTorch.

    python tools/deploy/export_model.py \
        --config-file configs/Synthetic/panoptic_fpn_R_18_tiny_freqfusion.yaml \
        --export-method tracing --format onnx --output /tmp/x MODEL.WEIGHTS "" MODEL.DEVICE cpu

Shaped like detectron2's tools/deploy/export_model.py. Supports Panoptic FPN, Mask R-CNN /
Faster R-CNN and Mask2Former (semantic, panoptic and instance inference) with FreqFusion. The
exported file holds the network up to its raw outputs; the post-processing that cannot be
exported (mask pasting, resizing to the output size, the panoptic merge) is listed in the log
and run in Python on the exported outputs. Both the raw outputs and the post-processed results
are compared with PyTorch; the exit status is 1 when any of them differs beyond the tolerances.
"""

import argparse
import logging
import sys

import torch
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from freqfusion_d2.engine import FreqFusionCheckpointer, setup_cfg
from freqfusion_d2.export import (
    FORMATS,
    METHODS,
    ONNX_OPSET,
    compare_raw_outputs,
    compare_results,
    export_model,
    sample_inputs,
)

logger = logging.getLogger("freqfusion_d2.export_model")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to config file")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="output format")
    parser.add_argument(
        "--export-method", choices=METHODS, default="tracing", help="how the model is captured"
    )
    parser.add_argument("--output", required=True, help="output directory of the exported model")
    parser.add_argument(
        "--sample-image",
        default=None,
        help="image to trace and check with (default: a generated image of the test size)",
    )
    parser.add_argument("--opset", type=int, default=ONNX_OPSET, help="ONNX opset (>= 17)")
    parser.add_argument(
        "--rtol", type=float, default=1e-4, help="relative tolerance (of the largest |output|)"
    )
    parser.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance")
    parser.add_argument(
        "--pixel-tolerance",
        type=float,
        default=1e-3,
        help="largest fraction of pixels of binary masks / panoptic maps allowed to differ",
    )
    parser.add_argument(
        "opts",
        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model_final.pth",
        default=[],
        nargs=argparse.REMAINDER,
    )
    return parser


def _report(title, diffs) -> bool:
    logger.info("%s:", title)
    for d in diffs:
        logger.info("  %s", d)
    ok = all(d.ok for d in diffs)
    # The output closest to (or furthest beyond) its limit.
    worst = max(diffs, key=lambda d: (not d.ok, d.value / d.limit if d.limit else d.value))
    print(f"{title}: {'agree' if ok else 'DIFFER'}; largest: {worst}")
    return ok


def main(args) -> int:
    setup_logger(name="freqfusion_d2")
    logger.info("Command line arguments: %s", args)
    cfg = setup_cfg(args.config_file, list(args.opts) + ["DATALOADER.NUM_WORKERS", "0"])
    model = build_model(cfg)
    FreqFusionCheckpointer(model).resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
    model.eval()
    inputs = sample_inputs(cfg, args.sample_image)
    logger.info(
        "Sample image %s, resized to %s",
        args.sample_image or "(generated)",
        tuple(inputs[0]["image"].shape[-2:]),
    )
    inputs[0]["image"] = inputs[0]["image"].to(cfg.MODEL.DEVICE)

    try:
        exported = export_model(
            model,
            inputs,
            args.output,
            format=args.format,
            method=args.export_method,
            opset=args.opset,
        )
    except ValueError as e:  # unsupported combination of model, method and format
        logger.error("%s", e)
        return 2
    adapter = exported.adapter
    logger.info("Wrote %s (%s, %s)", exported.path, args.format, args.export_method)
    logger.info("In the exported graph (%s): %s", adapter.name, adapter.in_graph)
    logger.info("Kept in Python (not exportable): %s", adapter.in_python)

    with torch.no_grad():
        reference_raw = adapter.raw_inference(model, inputs)
        reference = model(inputs)
    exported_raw = exported.run(inputs)
    with torch.no_grad():
        results = adapter.postprocess(model, exported_raw, inputs)

    tolerances = dict(rtol=args.rtol, atol=args.atol)
    ok = _report(
        "Raw outputs, exported vs PyTorch",
        compare_raw_outputs(reference_raw, exported_raw, **tolerances),
    )
    ok &= _report(
        "Results after the Python post-processing, exported vs PyTorch",
        compare_results(reference, results, pixel_limit=args.pixel_tolerance, **tolerances),
    )
    return 0 if ok else 1


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main(get_parser().parse_args()))
