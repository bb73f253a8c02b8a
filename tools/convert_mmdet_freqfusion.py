#!/usr/bin/env python
"""Converts an official FreqFusion mmdet checkpoint (FreqFusionCARAFEFPN) to a detectron2 one.

    python tools/convert_mmdet_freqfusion.py panoptic_fpn_r50_freqfusion.pth out.pth [--extra-p6]
        [--no-neck] [--backbone]

The output is a detectron2 checkpoint ({"model": ..., "__author__": ...}) for
``MODEL.WEIGHTS``, written atomically. FreqFusion weights carry over exactly
(neck.alignment.{0,1,2} -> backbone.fpn_freqfusion{2,3,4}; alignment.3 only with --extra-p6, for
MODEL.FREQFUSION.FPN_EXTRA_P6 True); the FPN convs by default; the ResNet with --backbone (then
set MODEL.RESNETS.STRIDE_IN_1X1 False). The mmdet heads are not converted. See
freqfusion_d2/modeling/checkpoint_conversion.py for the details. A bad input is told in one line
(--debug or FREQFUSION_DEBUG=1: traceback).
"""

import argparse
import logging
import os
import sys

import torch

from freqfusion_d2.engine.checkpoint import atomic_save
from freqfusion_d2.modeling import convert_mmdet_freqfusion_state_dict
from freqfusion_d2.utils.cli import (
    InputError,
    add_debug_flag,
    check_checkpoint,
    check_output_dir,
    run_cli,
)

EXPECTED = "an mmdet FreqFusionCARAFEFPN checkpoint (.pth)"


def main(argv=None):
    # The description is the docstring's first line, which says what is converted.
    summary, _, details = __doc__.partition("\n")
    parser = argparse.ArgumentParser(
        description=summary,
        epilog=details,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", help="mmdet checkpoint (.pth)")
    parser.add_argument("output", help="detectron2 checkpoint to write (.pth)")
    parser.add_argument("--extra-p6", action="store_true", help="keep the P6 fusion (alignment.3)")
    parser.add_argument("--no-neck", action="store_true", help="skip the FPN lateral/output convs")
    parser.add_argument("--backbone", action="store_true", help="also convert the ResNet")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    check_checkpoint("input", args.input, required=True)
    if os.path.isdir(args.output):
        raise InputError("output", f"{args.output} is a directory", "a file name (.pth)")
    check_output_dir("output", os.path.dirname(os.path.abspath(args.output)))
    checkpoint = torch.load(args.input, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict):
        raise InputError("input", f"{args.input} holds a {type(checkpoint).__name__}", EXPECTED)
    model, counts = convert_mmdet_freqfusion_state_dict(
        checkpoint, extra_p6=args.extra_p6, neck=not args.no_neck, backbone=args.backbone
    )
    if counts["freqfusion"] == 0:
        raise InputError("input", f"{args.input} has no neck.alignment.* tensors", EXPECTED)
    atomic_save({"model": model, "__author__": "mmdet FreqFusion (converted)"}, args.output)
    logging.info("Wrote %d tensors to %s (%s)", len(model), args.output, counts)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
