#!/usr/bin/env python
"""Converts an official FreqFusion mmdet checkpoint (FreqFusionCARAFEFPN) to a detectron2 one.

    python tools/convert_mmdet_freqfusion.py panoptic_fpn_r50_freqfusion.pth out.pth [--extra-p6]
        [--no-neck] [--backbone]

The output is a detectron2 checkpoint ({"model": ..., "__author__": ...}) for
``MODEL.WEIGHTS``. FreqFusion weights carry over exactly (neck.alignment.{0,1,2} ->
backbone.fpn_freqfusion{2,3,4}; alignment.3 only with --extra-p6, for
MODEL.FREQFUSION.FPN_EXTRA_P6 True); the FPN convs by default; the ResNet with --backbone (then
set MODEL.RESNETS.STRIDE_IN_1X1 False). The mmdet heads are not converted. See
freqfusion_d2/modeling/checkpoint_conversion.py for the details.
"""

import argparse
import logging

import torch

from freqfusion_d2.modeling import convert_mmdet_freqfusion_state_dict


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    checkpoint = torch.load(args.input, map_location="cpu", weights_only=False)
    model, counts = convert_mmdet_freqfusion_state_dict(
        checkpoint, extra_p6=args.extra_p6, neck=not args.no_neck, backbone=args.backbone
    )
    if counts["freqfusion"] == 0:
        raise SystemExit(
            f"{args.input}: no neck.alignment.* tensors found; is it a FreqFusion FPN?"
        )
    torch.save({"model": model, "__author__": "mmdet FreqFusion (converted)"}, args.output)
    logging.info("Wrote %d tensors to %s (%s)", len(model), args.output, counts)


if __name__ == "__main__":
    main()
