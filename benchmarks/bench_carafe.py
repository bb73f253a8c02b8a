"""Speed and peak extra memory of the compiled CARAFE op vs the pure-PyTorch reference, and of
the whole FreqFusion module, at Detectron2 sizes.

    python benchmarks/bench_carafe.py [--device cpu|cuda] [--repeat 5] [--threads N]

Sizes: C=256; low-pass upsampling lr 64x64 -> 128x128 with k=5, s=2; high-pass filtering of a
128x128 map with k=3, s=1; FreqFusion(256, 256) fusing 128x128 with 64x64 (Panoptic FPN R-50
options). Peak extra memory is measured with the profiler's memory accounting on CPU and with
torch.cuda.max_memory_allocated on CUDA, relative to the inputs already allocated.
"""

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from freqfusion_d2.layers import FreqFusion, carafe, carafe_ref


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _peak_extra_mb(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # Walk the allocation events in time order to find the high-water mark of live memory.
    events = sorted(
        (e for e in prof.events() if e.cpu_memory_usage != 0), key=lambda e: e.time_range.start
    )
    live = peak = 0
    for e in events:
        live += e.cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20


def _op_cases(device):
    gen = torch.Generator().manual_seed(0)
    cases = []
    for name, (c, h, w, k, s) in {
        "low-pass k=5 s=2 64->128": (256, 64, 64, 5, 2),
        "high-pass k=3 s=1 128": (256, 128, 128, 3, 1),
    }.items():
        features = torch.randn(1, c, h, w, generator=gen).to(device)
        masks = torch.randn(1, k * k, h * s, w * s, generator=gen).softmax(1).to(device)
        cases.append((name, features, masks, k, s))
    return cases


def _fwd(fn, f, m, k, s):
    def run():
        with torch.no_grad():
            fn(f, m, k, 1, s)

    return run


def _fwd_bwd(fn, f, m, k, s):
    f = f.clone().requires_grad_()
    m = m.clone().requires_grad_()

    def run():
        out = fn(f, m, k, 1, s)
        out.backward(torch.ones_like(out))
        f.grad = m.grad = None

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")

    rows = []
    for name, f, m, k, s in _op_cases(device):
        for mode, make in (("forward", _fwd), ("forward+backward", _fwd_bwd)):
            t_c = _time(make(carafe, f, m, k, s), device, args.repeat)
            t_r = _time(make(carafe_ref, f, m, k, s), device, args.repeat)
            m_c = _peak_extra_mb(make(carafe, f, m, k, s), device)
            m_r = _peak_extra_mb(make(carafe_ref, f, m, k, s), device)
            rows.append((name, mode, t_c, t_r, t_r / t_c, m_c, m_r, m_r / max(m_c, 1e-9)))

    header = (
        "case",
        "pass",
        "compiled ms",
        "reference ms",
        "speed-up",
        "compiled MB",
        "reference MB",
        "memory ratio",
    )
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        cells = [r[0], r[1], f"{r[2]:.1f}", f"{r[3]:.1f}", f"{r[4]:.1f}x"]
        cells += [f"{r[5]:.1f}", f"{r[6]:.1f}", f"{r[7]:.1f}x"]
        print("| " + " | ".join(cells) + " |")

    module = FreqFusion(256, 256, feature_resample=True, feature_resample_norm=False).to(device)
    gen = torch.Generator().manual_seed(1)
    hr = torch.randn(1, 256, 128, 128, generator=gen).to(device)
    lr = torch.randn(1, 256, 64, 64, generator=gen).to(device)
    print("\n| FreqFusion(256, 256), hr 128x128, lr 64x64 | ms | peak extra MB |")
    print("|---|---|---|")
    import freqfusion_d2.layers.freqfusion as ff_module

    for label, op in (("compiled CARAFE", carafe), ("reference CARAFE", carafe_ref)):
        ff_module.carafe = op
        try:

            def fwd():
                with torch.no_grad():
                    module(hr, lr)

            h = hr.clone().requires_grad_()

            def fwd_bwd():
                _, a, b = module(h, lr)
                (a.sum() + b.sum()).backward()
                module.zero_grad(set_to_none=True)
                h.grad = None

            for mode, fn in (("forward", fwd), ("forward+backward", fwd_bwd)):
                t = _time(fn, device, args.repeat)
                mem = _peak_extra_mb(fn, device)
                print(f"| {label}, {mode} | {t:.1f} | {mem:.1f} |")
        finally:
            ff_module.carafe = carafe


if __name__ == "__main__":
    main()
