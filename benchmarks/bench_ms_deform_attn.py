#!/usr/bin/env python
"""Times multi-scale deformable attention: compiled kernels vs the pure-PyTorch reference.

The default size is one deformable-encoder layer of the Mask2Former pixel decoder on a 512x512
image: 3 levels of 64x64, 32x32 and 16x16 (strides 8, 16, 32), 8 heads of 32 channels, 4 points,
one query per value (Lq = S = 5376). Prints a markdown table of median times.

Example:
    PYTHONPATH=$PWD python benchmarks/bench_ms_deform_attn.py --batch 1 2 --threads 2
"""

import argparse
import statistics
import time

import torch

from freqfusion_d2.layers import ms_deform_attn_ref
from freqfusion_d2.layers._ext import get_extension, has_kernel_for
from freqfusion_d2.layers.ms_deform_attn import _MSDeformAttnFunction


def make_inputs(batch, image_size, strides, heads, channels, points, spread, dtype, device, seed=0):
    """Inputs shaped like one deformable-encoder layer.

    As in the encoder, every position of every level is a query whose reference point is its own
    normalised pixel centre, and each sample lies a few pixels of each level away from it
    (Gaussian offsets with standard deviation ``spread`` pixels, so some fall past the borders).
    """
    gen = torch.Generator().manual_seed(seed)
    shapes = [(image_size // s, image_size // s) for s in strides]
    spatial = torch.tensor(shapes, dtype=torch.int64)
    sizes = spatial.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    total = int(sizes.sum())
    levels = len(shapes)
    refs = []
    for h, w in shapes:
        ys, xs = torch.meshgrid(
            (torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij"
        )
        refs.append(torch.stack([xs.flatten(), ys.flatten()], dim=-1))
    ref = torch.cat(refs)[None, :, None, None, None, :]  # (1, S, 1, 1, 1, 2)
    normalizer = spatial.flip(-1).float()[None, None, None, :, None, :]  # (W_l, H_l)
    offsets = torch.randn(batch, total, heads, levels, points, 2, generator=gen) * spread
    loc = ref + offsets / normalizer
    value = torch.randn(batch, total, heads, channels, generator=gen)
    weights = torch.rand(batch, total, heads, levels * points, generator=gen).softmax(-1)
    weights = weights.view(batch, total, heads, levels, points)
    cast = dict(device=device, dtype=dtype)
    return (
        value.to(**cast),
        spatial.to(device),
        starts.to(device),
        loc.to(**cast),
        weights.to(**cast),
    )


def compiled(value, spatial, starts, loc, weights):
    return _MSDeformAttnFunction.apply(value, spatial, starts, loc, weights)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn, device, repeats, clock, warmup=2):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        sync(device)
        times.append(clock() - start)
    return statistics.median(times)


def bench(impl, inputs, device, repeats, clock):
    value, spatial, starts, loc, weights = inputs

    def forward():
        with torch.no_grad():
            impl(value, spatial, starts, loc, weights)

    leaves = [t.detach().clone().requires_grad_() for t in (value, loc, weights)]
    grad = None

    def forward_backward():
        nonlocal grad
        out = impl(leaves[0], spatial, starts, leaves[1], leaves[2])
        if grad is None:
            grad = torch.randn_like(out)
        torch.autograd.grad(out, leaves, grad)

    return (
        time_it(forward, device, repeats, clock),
        time_it(forward_backward, device, repeats, clock),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--strides", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--channels", type=int, default=32, help="channels per head")
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument(
        "--spread", type=float, default=4.0, help="std of the sampling offsets, in pixels"
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="wall: elapsed time; cpu: CPU time of this process (summed over its threads), "
        "steadier on a shared machine when used with --threads 1",
    )
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if get_extension() is None or not has_kernel_for(device):
        raise SystemExit(f"freqfusion_d2._C has no kernels for {device}; build it first")
    print(
        f"device={device} dtype={args.dtype} threads={torch.get_num_threads()} clock={args.clock} "
        f"image={args.image_size} strides={args.strides} heads={args.heads} "
        f"channels/head={args.channels} points={args.points} spread={args.spread}px (Lq = S)"
    )
    print("| N | S = Lq | pass | reference (ms) | compiled (ms) | speed-up |")
    print("|---|---|---|---|---|---|")
    for batch in args.batch:
        inputs = make_inputs(
            batch,
            args.image_size,
            args.strides,
            args.heads,
            args.channels,
            args.points,
            args.spread,
            dtype,
            device,
        )
        ref = bench(ms_deform_attn_ref, inputs, device, args.repeats, clock)
        fast = bench(compiled, inputs, device, args.repeats, clock)
        total = inputs[0].shape[1]
        for name, r, f in zip(("forward", "forward+backward"), ref, fast):
            print(f"| {batch} | {total} | {name} | {r * 1e3:.1f} | {f * 1e3:.1f} | {r / f:.1f}x |")


if __name__ == "__main__":
    main()
