#!/usr/bin/env python
"""Parameters, FLOPs, activations or structure of a model built from a config.

Shaped like detectron2's ``tools/analyze_model.py``, but needs no dataset and no weights: the
model is built with random weights (seed 0) and FLOPs are counted on one generated image.

    python tools/analyze_model.py --tasks parameter flop \\
        --config-file configs/COCO-PanopticSegmentation/panoptic_fpn_R_50_1x_freqfusion.yaml
    python tools/analyze_model.py --tasks flop --input-size 640 640 --config-file ... [KEY VALUE ...]

Counting rules:

* Parameters: every parameter of the built model (``fvcore.nn.parameter_count``, which equals
  ``sum(p.numel() for p in model.parameters())``).
* FLOPs: detectron2's ``FlopCountAnalysis`` (fvcore, jit tracing) of one inference forward on a
  random image. One multiply-add counts as one FLOP, as in fvcore. The compiled ops are counted
  by the handles below (CARAFE: k*k multiply-adds per output value; multi-scale deformable
  attention: 5 per sampled value). Convolutions, linear layers, matrix products, norms,
  interpolation and grid_sample are counted by fvcore's handles; element-wise ops, reductions,
  softmax and ``roi_align`` are not counted.
* Input size: by default a 480 x 640 (H x W) image resized as the config's test transform does
  (``INPUT.MIN_SIZE_TEST`` / ``INPUT.MAX_SIZE_TEST``), e.g. 800 x 1067 for the COCO configs;
  ``--input-size H W`` gives the model input size directly. The model then pads it to its size
  divisibility as usual.
* R-CNN heads do data-dependent work. So that random weights give a defined count, RPN and box
  NMS are disabled, the score threshold is 0 and the box deltas are zero: the box head runs on
  exactly ``MODEL.RPN.POST_NMS_TOPK_TEST`` proposals and the mask head on exactly
  ``TEST.DETECTIONS_PER_IMAGE`` detections (``--keep-heads`` counts the heads as built instead).
"""

import argparse
import json
import logging
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model
from detectron2.utils.analysis import (
    FlopCountAnalysis,
    activation_count_operators,
    parameter_count_table,
)
from detectron2.utils.logger import setup_logger
from fvcore.nn import flop_count_table, parameter_count

import freqfusion_d2.modeling  # noqa: F401  (registers the backbones and models)
from freqfusion_d2.engine import setup_cfg
from freqfusion_d2.utils.cli import (
    InputError,
    add_debug_flag,
    check_output_dir,
    load_config,
    run_cli,
)

logger = logging.getLogger("freqfusion_d2.analyze_model")

# Options that make the R-CNN heads process a fixed number of boxes (see the module docstring).
FIXED_BOX_OPTS = [
    "MODEL.RPN.NMS_THRESH",
    "1.0",
    "MODEL.ROI_HEADS.NMS_THRESH_TEST",
    "1.0",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "0.0",
]


def _numel(shape) -> int:
    return int(np.prod(shape)) if shape else 1


def _carafe_flops(inputs, outputs) -> int:
    # out (N, C, sH, sW); masks (N, G*k*k, sH, sW): each output value is a k*k weighted sum.
    out = outputs[0].type().sizes()
    masks = inputs[1].type().sizes()
    node = outputs[0].node()
    if node.kind() == "prim::PythonOp":  # autograd Function: (kernel_size, groups, scale)
        groups = int(node.scalar_args()[1])
    else:  # torch.ops call: ints are graph inputs
        groups = int(inputs[3].toIValue())
    return _numel(out) * (masks[1] // groups)


def _ms_deform_attn_flops(inputs, outputs) -> int:
    # Per head channel and sample: 4 bilinear taps and 1 attention weight.
    n, lq, m, levels, points = inputs[3].type().sizes()[:5]
    d = inputs[0].type().sizes()[3]
    return n * lq * m * levels * points * d * 5


def _baddbmm_flops(inputs, outputs) -> int:
    # (b, n, k) @ (b, k, m) added to a mask (nn.MultiheadAttention with attn_mask).
    b, n, k = inputs[1].type().sizes()
    return b * n * k * inputs[2].type().sizes()[-1]


FLOP_HANDLES = {
    "aten::baddbmm": _baddbmm_flops,
    # Names under which the compiled ops appear in a trace (autograd Function or torch.ops).
    "prim::PythonOp._CARAFEFunction": _carafe_flops,
    "freqfusion_d2::carafe_forward": _carafe_flops,
    "prim::PythonOp._MSDeformAttnFunction": _ms_deform_attn_flops,
    "freqfusion_d2::ms_deform_attn_forward": _ms_deform_attn_flops,
}


def default_input_size(cfg) -> List[int]:
    """(H, W) of a 480 x 640 image after the config's test resize."""
    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    h, w = resize.get_output_shape(480, 640, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    return [int(h), int(w)]


def build_cfg(config_file: str, opts: Sequence[str], keep_heads: bool = False):
    opts = list(opts) if keep_heads else FIXED_BOX_OPTS + list(opts)
    return setup_cfg(config_file, opts + ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"])


def build_random_model(cfg, keep_heads: bool = False) -> torch.nn.Module:
    """The model of ``cfg`` with seeded random weights, in eval mode."""
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    if not keep_heads:
        layers = []
        rpn = getattr(getattr(model, "proposal_generator", None), "rpn_head", None)
        if rpn is not None and hasattr(rpn, "anchor_deltas"):
            layers.append(rpn.anchor_deltas)
        predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
        if predictor is not None and hasattr(predictor, "bbox_pred"):
            layers.append(predictor.bbox_pred)
        with torch.no_grad():
            for layer in layers:
                layer.weight.zero_()
                if layer.bias is not None:
                    layer.bias.zero_()
    return model


def generated_inputs(size: Sequence[int]) -> List[Dict]:
    h, w = size
    g = torch.Generator().manual_seed(0)
    image = (torch.rand(3, h, w, generator=g) * 255).round()
    return [{"image": image, "height": h, "width": w}]


def count_parameters(model: torch.nn.Module) -> int:
    return int(parameter_count(model)[""])


def count_flops(model: torch.nn.Module, inputs, table: bool = False):
    with torch.no_grad():
        flops = FlopCountAnalysis(model, inputs)
        flops.set_op_handle(**FLOP_HANDLES)
        flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = int(flops.total())
        by_module = flops.by_module()
        # detectron2's wrapper traces the model under the name "model".
        backbone = int(by_module.get("model.backbone", by_module.get("backbone", 0)))
        text = flop_count_table(flops, max_depth=3) if table else None
    return total, backbone, text


def analyze(
    config_file: str,
    tasks: Sequence[str],
    opts: Sequence[str] = (),
    input_size: Optional[Sequence[int]] = None,
    keep_heads: bool = False,
    verbose: bool = True,
) -> Dict:
    """Runs ``tasks`` on the model of ``config_file``; returns the numbers as a dict."""
    cfg = build_cfg(config_file, opts, keep_heads)
    model = build_random_model(cfg, keep_heads)
    result: Dict = {"config": config_file}
    for task in tasks:
        if task == "parameter":
            result["parameters"] = count_parameters(model)
            backbone = getattr(model, "backbone", None)
            if backbone is not None:
                result["backbone_parameters"] = count_parameters(backbone)
            if verbose:
                logger.info("Parameter count:\n" + parameter_count_table(model, max_depth=3))
        elif task == "flop":
            size = list(input_size) if input_size else default_input_size(cfg)
            total, backbone, text = count_flops(model, generated_inputs(size), table=verbose)
            result.update(input_size=size, flops=total, backbone_flops=backbone)
            if verbose:
                logger.info(f"FLOPs for one {size[0]}x{size[1]} input:\n{text}")
        elif task == "activation":
            size = list(input_size) if input_size else default_input_size(cfg)
            with torch.no_grad():
                counts = activation_count_operators(model, generated_inputs(size))
            result.update(input_size=size, activations_m=float(sum(counts.values())))
            if verbose:
                logger.info("Activations (millions) by operator: %s", dict(counts))
        elif task == "structure":
            if verbose:
                logger.info("Model structure:\n" + str(model))
        else:
            raise ValueError(f"unknown task {task!r}")
    return result


def summary(result: Dict) -> str:
    parts = [result["config"]]
    if "parameters" in result:
        parts.append(f"params {result['parameters']:,} ({result['parameters'] / 1e6:.2f}M)")
    if "flops" in result:
        h, w = result["input_size"]
        parts.append(
            f"GFLOPs {result['flops'] / 1e9:.1f} (backbone {result['backbone_flops'] / 1e9:.1f})"
            f" at {h}x{w}"
        )
    if "activations_m" in result:
        parts.append(f"activations {result['activations_m']:.1f}M")
    return "; ".join(parts)


def get_parser() -> argparse.ArgumentParser:
    parser = default_argument_parser(epilog="""
Examples:
  python tools/analyze_model.py --tasks parameter \\
      --config-file configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x_freqfusion.yaml
  python tools/analyze_model.py --tasks flop --input-size 640 640 --config-file \\
      configs/ADE20K-SemanticSegmentation/mask2former_FreqFusion_R50_bs16_160k.yaml
""")
    parser.description = (
        "Counts the parameters and FLOPs of a freqfusion_d2 model on a generated image "
        "(no dataset, random weights)."
    )
    parser.add_argument(
        "--tasks",
        choices=["parameter", "flop", "activation", "structure"],
        required=True,
        nargs="+",
    )
    parser.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="model input size (default: a 480x640 image through the config's test resize)",
    )
    parser.add_argument(
        "--keep-heads",
        action="store_true",
        help="count the R-CNN heads as built (data dependent) instead of on a fixed box count",
    )
    parser.add_argument("--json-out", help="also write the numbers to this JSON file")
    return add_debug_flag(parser)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = get_parser().parse_args(argv)
    if args.eval_only or args.num_gpus != 1 or args.num_machines != 1:
        raise InputError(
            "--eval-only / --num-gpus / --num-machines", "not used", "one process, no flags"
        )
    # One-line errors for a bad config, key or size, before the model is built.
    if not args.config_file:
        raise InputError("--config-file", "not given", "a YAML config file under configs/")
    load_config(args.config_file, args.opts)
    if args.input_size and min(args.input_size) < 1:
        raise InputError("--input-size", " ".join(map(str, args.input_size)), "positive H W")
    if args.json_out:
        check_output_dir("--json-out (its folder)", os.path.dirname(os.path.abspath(args.json_out)))
    setup_logger(name="fvcore")
    setup_logger(name="freqfusion_d2")
    result = analyze(args.config_file, args.tasks, args.opts, args.input_size, args.keep_heads)
    logger.info(summary(result))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    sys.exit(run_cli(lambda argv: main(argv) and 0))  # pragma: no cover
