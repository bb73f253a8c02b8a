#!/usr/bin/env python
"""Mask2Former R50 baseline vs the FreqFusion pixel decoder on the CPU, and MSDeformAttn kernels.

Reports, for the COCO panoptic R50 configs at a square input (512 x 512 by default):

* parameters (model and pixel decoder);
* GFLOPs of one eval forward (fvcore, through detectron2's FlopCountAnalysis; the compiled
  CARAFE and MSDeformAttn ops are counted with the handles below, multiply-adds as one FLOP);
* seconds per eval image and per training step (forward, backward and AdamW step, batch of
  one image with random masks) after a warm-up;
* MSDeformAttn at the shape of the pixel-decoder encoder for this input: compiled CPU kernel
  (``freqfusion_d2.layers.ms_deform_attn``) vs the pure-PyTorch reference, forward and
  forward + backward.

Usage:
    python benchmarks/bench_mask2former.py [--size 512] [--iters 3] [--threads N] [--no-train]
"""

import argparse
import logging
import os
import time
from typing import Callable, List

import numpy as np
import torch
from detectron2.modeling import build_model
from detectron2.structures import Instances
from detectron2.utils.analysis import FlopCountAnalysis
from detectron2.utils.events import EventStorage

from freqfusion_d2 import add_freqfusion_config, add_maskformer2_config
from freqfusion_d2.layers import ms_deform_attn, ms_deform_attn_ref
from freqfusion_d2.layers._ext import get_extension
from freqfusion_d2.solver import build_maskformer_optimizer

CONFIGS = {
    "R50 baseline": "configs/COCO-PanopticSegmentation/mask2former_R50_bs16_50ep.yaml",
    "R50 FreqFusion": "configs/COCO-PanopticSegmentation/mask2former_FreqFusion_R50_bs16_50ep.yaml",
}


def load_cfg(path: str):
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_freqfusion_config(cfg)
    add_maskformer2_config(cfg)
    cfg.merge_from_file(path)
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.DATASETS.TRAIN = ()
    return cfg


def timeit(fn: Callable[[], object], iters: int) -> float:
    """Median seconds of ``iters`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _carafe_flops(inputs, outputs):
    # FreqFusion uses one kernel group: k*k multiply-adds per output element (N, C, H', W').
    out = outputs[0].type().sizes()
    k2 = inputs[1].type().sizes()[1]
    return int(np.prod(out)) * k2


def _msda_flops(inputs, outputs):
    # Per output channel and sample: 4 bilinear taps + 1 weight = 5 multiply-adds.
    loc = inputs[3].type().sizes()  # (N, Lq, M, L, P, 2)
    value = inputs[0].type().sizes()  # (N, S, M, D)
    n, lq, m, levels, points = loc[:5]
    return n * lq * m * levels * points * value[3] * 5


def _baddbmm_flops(inputs, outputs):
    # nn.MultiheadAttention with a mask: (b, n, k) @ (b, k, m) on top of the mask.
    b, n, k = inputs[1].type().sizes()
    return b * n * k * inputs[2].type().sizes()[-1]


FLOP_HANDLES = {
    "aten::baddbmm": _baddbmm_flops,
    "prim::PythonOp._CARAFEFunction": _carafe_flops,
    "prim::PythonOp._MSDeformAttnFunction": _msda_flops,
}


def eval_inputs(size: int) -> List[dict]:
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(3, size, size, generator=g) * 255}]


def train_inputs(size: int, num_classes: int) -> List[dict]:
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(5, size, size, dtype=torch.bool)
    for i in range(5):
        y, x = torch.randint(0, size // 2, (2,), generator=g).tolist()
        masks[i, y : y + size // 3, x : x + size // 3] = True
    inst = Instances(
        (size, size),
        gt_classes=torch.randint(0, num_classes, (5,), generator=g),
        gt_masks=masks,
    )
    return [{"image": torch.rand(3, size, size, generator=g) * 255, "instances": inst}]


def bench_model(name: str, path: str, size: int, iters: int, train: bool) -> dict:
    cfg = load_cfg(path)
    torch.manual_seed(0)
    model = build_model(cfg)
    row = {
        "model": name,
        "params (M)": sum(p.numel() for p in model.parameters()) / 1e6,
        "pixel decoder params (M)": sum(
            p.numel() for p in model.sem_seg_head.pixel_decoder.parameters()
        )
        / 1e6,
    }
    model.eval()
    inputs = eval_inputs(size)
    with torch.no_grad():
        flops = FlopCountAnalysis(model, inputs)
        flops.set_op_handle(**FLOP_HANDLES)
        flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        row["GFLOPs"] = flops.total() / 1e9
        # The head calls pixel_decoder.forward_features, which module scopes do not see.
        features = model.backbone((inputs[0]["image"][None] - model.pixel_mean) / model.pixel_std)
        pd_flops = FlopCountAnalysis(model.sem_seg_head.pixel_decoder, (features,))
        pd_flops.set_op_handle(**FLOP_HANDLES)
        pd_flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        row["pixel decoder GFLOPs"] = pd_flops.total() / 1e9
        row["eval s/img"] = timeit(lambda: model(inputs), iters)
    if train:
        model.train()
        optimizer = build_maskformer_optimizer(cfg, model)
        batch = train_inputs(size, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)

        def step():
            with EventStorage():
                losses = model(batch)
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()

        row["train s/step"] = timeit(step, iters)
    return row


def bench_msda(size: int, iters: int) -> List[dict]:
    """Encoder-shaped MSDeformAttn: levels at strides 8, 16, 32; queries = all tokens."""
    torch.manual_seed(0)
    shapes = torch.tensor([[size // s, size // s] for s in (32, 16, 8)], dtype=torch.long)
    starts = torch.cat((shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]))
    s = int(shapes.prod(1).sum())
    n, heads, d, levels, points = 1, 8, 32, 3, 4
    value = torch.randn(n, s, heads, d)
    loc = torch.rand(n, s, heads, levels, points, 2) * 1.2 - 0.1
    attn = torch.softmax(torch.randn(n, s, heads, levels * points), -1).view(
        n, s, heads, levels, points
    )
    rows = []
    for name, fn in (("compiled", ms_deform_attn), ("reference", ms_deform_attn_ref)):
        if name == "compiled" and get_extension() is None:
            continue
        with torch.no_grad():
            fwd = timeit(lambda: fn(value, shapes, starts, loc, attn), iters)
        v, lo, a = (t.clone().requires_grad_() for t in (value, loc, attn))
        both = timeit(lambda: fn(v, shapes, starts, lo, a).sum().backward(), iters)
        rows.append(
            {"MSDeformAttn": name, "queries": s, "fwd ms": fwd * 1e3, "fwd+bwd ms": both * 1e3}
        )
    return rows


def print_table(rows: List[dict]) -> None:
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        cells = [f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in keys]
        print("| " + " | ".join(cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="square input size")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--no-train", action="store_true", help="skip the training-step timing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {args.size}^2")
    rows = [
        bench_model(name, os.path.join(root, path), args.size, args.iters, not args.no_train)
        for name, path in CONFIGS.items()
    ]
    print_table(rows)
    extra = (rows[1]["params (M)"] - rows[0]["params (M)"]) * 1e6
    print(f"FreqFusion adds {extra:,.0f} parameters ({extra / 1e6:.3f} M)")
    print_table(bench_msda(args.size, args.iters))


if __name__ == "__main__":
    main()
