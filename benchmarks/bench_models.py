#!/usr/bin/env python
"""Params, FLOPs and inference time of Panoptic FPN R-50 with and without FreqFusion.

    python benchmarks/bench_models.py [--height 800 --width 1333] [--repeat 5] [--device cpu]

Both models are built from the COCO configs without weights. The RPN keeps exactly
POST_NMS_TOPK_TEST proposals (no NMS, zero box deltas) and the box head exactly
TEST.DETECTIONS_PER_IMAGE detections (score threshold 0), so the heads do the same work in both
models and the difference is the FPN. FLOPs are fvcore's counts (one multiply-add = 1 "flop")
with the CARAFE op counted as k*k multiply-adds per output value; grid_sample and element-wise
ops are not counted. Times are medians over --repeat runs after a warm-up, with the two models
interleaved so that load changes affect both alike.
"""

import argparse
import statistics
import time

import torch
from detectron2.modeling import build_model
from detectron2.utils.analysis import FlopCountAnalysis

import freqfusion_d2.modeling  # noqa: F401  (registers the models)
from freqfusion_d2.engine import setup_cfg

CONFIGS = {
    "Panoptic FPN R-50": "configs/COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml",
    "+ FreqFusion": "configs/COCO-PanopticSegmentation/panoptic_fpn_R_50_1x_freqfusion.yaml",
}


def carafe_flop_handle(inputs, outputs):
    """CARAFE: each output value is a k*k weighted sum (k*k multiply-adds)."""
    out_shape = outputs[0].type().sizes()
    kernel = inputs[2].toIValue()
    n = 1
    for s in out_shape:
        n *= s
    return n * kernel * kernel


def build(config, device, detections):
    # No RPN NMS and no score threshold: both models keep exactly POST_NMS_TOPK_TEST proposals
    # and `detections` boxes whatever their random weights predict, so the heads do equal work.
    opts = [
        "MODEL.RPN.NMS_THRESH",
        "1.0",
        "MODEL.WEIGHTS",
        "",
        "MODEL.DEVICE",
        device,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0.0",
        "TEST.DETECTIONS_PER_IMAGE",
        str(detections),
    ]
    torch.manual_seed(0)
    model = build_model(setup_cfg(config, opts)).eval()
    # Zero box deltas: proposals are the anchors and detections the proposals, so untrained
    # weights never yield degenerate (removed) boxes and both models run their heads on exactly
    # as many boxes.
    for layer in (
        model.proposal_generator.rpn_head.anchor_deltas,
        model.roi_heads.box_predictor.bbox_pred,
    ):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    return model


def count_flops(model, inputs):
    flops = FlopCountAnalysis(model, inputs)
    flops.set_op_handle("freqfusion_d2::carafe_forward", carafe_flop_handle)
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    by_module = flops.by_module()
    # detectron2's wrapper traces the model under the name "model".
    return flops.total(), by_module.get("model.backbone", by_module.get("backbone", 0))


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--no-flops", action="store_true")
    args = parser.parse_args()

    models = {name: build(cfg, args.device, args.detections) for name, cfg in CONFIGS.items()}
    image = torch.rand(3, args.height, args.width, device=args.device) * 255
    inputs = [{"image": image, "height": args.height, "width": args.width}]
    rows = {}
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters())
        flops = count_flops(model, inputs) if not args.no_flops else (float("nan"),) * 2
        rows[name] = {"params": params, "flops": flops[0], "backbone_flops": flops[1]}

    times = {name: {"model": [], "backbone": []} for name in models}
    with torch.no_grad():
        for name, model in models.items():  # warm-up
            model(inputs)
        padded = models["+ FreqFusion"].preprocess_image(inputs).tensor
        for _ in range(args.repeat):
            for name, model in models.items():
                sync(args.device)
                start = time.perf_counter()
                model(inputs)
                sync(args.device)
                times[name]["model"].append(time.perf_counter() - start)
                start = time.perf_counter()
                model.backbone(padded)
                sync(args.device)
                times[name]["backbone"].append(time.perf_counter() - start)

    device = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else (f"CPU, {torch.get_num_threads()} threads")
    )
    print(f"Panoptic FPN R-50 at {args.height}x{args.width}, {device}, median of {args.repeat}")
    print(
        "| Model | Params (M) | GFLOPs | GFLOPs backbone+FPN | Time (s) | Backbone+FPN time (s) |"
    )
    print("|---|---|---|---|---|---|")
    base = None
    for name in models:
        r = rows[name]
        values = (
            r["params"] / 1e6,
            r["flops"] / 1e9,
            r["backbone_flops"] / 1e9,
            statistics.median(times[name]["model"]),
            statistics.median(times[name]["backbone"]),
        )
        if base is None:
            base = values
            cells = [f"{v:.3f}" for v in values]
        else:
            cells = [f"+{values[0] - base[0]:.3f}"]
            cells += [f"{v:.3f} ({(v / b - 1) * 100:+.1f}%)" for v, b in zip(values[1:], base[1:])]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
