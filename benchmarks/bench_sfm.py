"""Cost of Spatial Frequency Modulation over its baseline, measured in the same run.

Builds a baseline config and its ``*_sfm.yaml`` (random weights, the SFM model loaded with the
baseline's), checks that they agree (a new SFM model is its baseline), then times inference on
one image, alternating the two models, and reports the median time, the peak extra memory of
one forward (on CPU from the profiler's per-op allocation and free events in time order; on CUDA
from ``max_memory_allocated``), and where the SFM time goes: the ARS modules (of which the
Gaussian sums of the grid), the stage demodulators, the final MSAU, and the bilinear upsampling
that the final MSAU replaces.

Usage (from the repository root)::

    python benchmarks/bench_sfm.py [--size 512] [--repeat 5] [--threads N] [--device cpu]
        [--config configs/ADE20K-SemanticSegmentation/semantic_fpn_R50_512x512_80k_sfm.yaml]
        [MODEL.SFM.MSAU_DILATIONS "[1]" ...]
"""

import argparse
import statistics
import time
from contextlib import contextmanager

import torch
from detectron2.modeling import build_model
from torch.profiler import ProfilerActivity, profile

import freqfusion_d2.layers.adaptive_resampler as ars_module
from freqfusion_d2.engine import setup_cfg
from freqfusion_d2.layers import AdaptiveResampler, MultiScaleAdaptiveUpsampler

DEFAULT = "configs/ADE20K-SemanticSegmentation/semantic_fpn_R50_512x512_80k_sfm.yaml"


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


class Timers:
    """Accumulated wall time per label, filled by wrappers installed on the SFM modules."""

    def __init__(self, device):
        self.device = device
        self.total = {}
        self.enabled = False
        self.final_input = None

    @contextmanager
    def measure(self, label):
        if not self.enabled:
            yield
            return
        _sync(self.device)
        start = time.perf_counter()
        yield
        _sync(self.device)
        self.total[label] = self.total.get(label, 0.0) + time.perf_counter() - start


def instrument(model, timers: Timers):
    """Wraps the ARS forwards, the Gaussian sums, the demodulators and the other MSAUs."""
    original_sums = ars_module.gaussian_saliency_offsets

    def timed_sums(*args, **kwargs):
        with timers.measure("ARS Gaussian sums"):
            return original_sums(*args, **kwargs)

    ars_module.gaussian_saliency_offsets = timed_sums
    for name, module in model.named_modules():
        if isinstance(module, AdaptiveResampler):
            forward = module.forward

            def ars_forward(x, _f=forward):
                with timers.measure("ARS (all)"):
                    return _f(x)

            module.forward = ars_forward
        elif isinstance(module, MultiScaleAdaptiveUpsampler):
            # Demodulators run through sample(), the final upsamplers through forward().
            demod = ".demod." in f".{name}."
            label = "stage demodulation" if demod else "final MSAU"
            method = "sample" if demod else "forward"
            fn = getattr(module, method)

            def wrapped(*args, _f=fn, _label=label, **kwargs):
                if _label == "final MSAU":
                    timers.final_input = (args[0], args[1] if len(args) > 1 else None, kwargs)
                with timers.measure(_label):
                    return _f(*args, **kwargs)

            setattr(module, method, wrapped)
    return original_sums


def peak_extra_mb(fn, device) -> float:
    """High-water mark of memory allocated while ``fn`` runs, above what was live before."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.events() if e.self_cpu_memory_usage != 0), key=lambda e: e.time_range.start
    )
    live = peak = 0
    for e in events:
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=DEFAULT, help="an *_sfm.yaml; its baseline is found")
    parser.add_argument("--size", type=int, default=512, help="square input size")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides of the SFM model (KEY VALUE ...)"
    )
    args = parser.parse_args()
    if not args.config.endswith("_sfm.yaml"):
        parser.error(f"--config must be an *_sfm.yaml, got {args.config}")
    if args.threads:
        torch.set_num_threads(args.threads)
    opts = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", args.device]
    baseline_path = args.config[: -len("_sfm.yaml")] + ".yaml"
    torch.manual_seed(0)
    baseline = build_model(setup_cfg(baseline_path, opts)).eval()
    sfm = build_model(setup_cfg(args.config, opts + list(args.opts))).eval()
    missing = sfm.load_state_dict(baseline.state_dict(), strict=False)
    assert not missing.unexpected_keys, missing.unexpected_keys
    g = torch.Generator().manual_seed(0)
    image = (torch.rand(3, args.size, args.size, generator=g) * 255).to(torch.uint8)
    inputs = [{"image": image.to(args.device)}]

    def run(model):
        with torch.no_grad():
            return model(inputs)[0]["sem_seg"]

    a, b = run(baseline), run(sfm)
    rel = float((a - b).abs().max() / a.abs().max())
    timers = Timers(args.device)
    original = instrument(sfm, timers)
    times = {"baseline": [], "sfm": []}
    try:
        for _ in range(args.repeat):
            for name, model in (("baseline", baseline), ("sfm", sfm)):
                timers.enabled = name == "sfm"
                _sync(args.device)
                start = time.perf_counter()
                run(model)
                _sync(args.device)
                times[name].append(time.perf_counter() - start)
        timers.enabled = False
        mem = {
            name: peak_extra_mb(lambda m=m: run(m), args.device)
            for name, m in (("baseline", baseline), ("sfm", sfm))
        }
    finally:
        ars_module.gaussian_saliency_offsets = original

    t_base = statistics.median(times["baseline"]) * 1e3
    t_sfm = statistics.median(times["sfm"]) * 1e3
    # The fastest run is the least disturbed by other jobs on a shared machine.
    b_base, b_sfm = min(times["baseline"]) * 1e3, min(times["sfm"]) * 1e3
    params = sum(p.numel() for p in sfm.parameters()) - sum(
        p.numel() for p in baseline.parameters()
    )
    print(f"config: {args.config} {' '.join(args.opts)} vs {baseline_path}")
    print(
        f"input {args.size}x{args.size}, {args.device}, {torch.get_num_threads()} threads, "
        f"median of {args.repeat}; SFM at init vs baseline: max rel. diff {rel:.1e}; "
        f"extra params {params / 1e6:.3f}M"
    )
    print()
    print("| model | inference ms, median | inference ms, best | peak extra MB |")
    print("|---|---|---|---|")
    print(f"| baseline | {t_base:.0f} | {b_base:.0f} | {mem['baseline']:.0f} |")
    print(f"| SFM | {t_sfm:.0f} | {b_sfm:.0f} | {mem['sfm']:.0f} |")
    print(
        f"| SFM / baseline | {t_sfm / t_base:.3f}x (+{100 * (t_sfm / t_base - 1):.1f}%) | "
        f"{b_sfm / b_base:.3f}x (+{100 * (b_sfm / b_base - 1):.1f}%) | "
        f"{mem['sfm'] / max(mem['baseline'], 1e-9):.3f}x |"
    )
    print()
    print("| SFM part | ms per image | % of SFM inference |")
    print("|---|---|---|")
    for label in ("ARS (all)", "ARS Gaussian sums", "stage demodulation", "final MSAU"):
        ms = timers.total.get(label, 0.0) * 1e3 / args.repeat
        print(f"| {label} | {ms:.1f} | {100 * ms / t_sfm:.1f}% |")
    if timers.final_input is not None:
        # The final MSAU replaces a bilinear upsampling of the same logits in the baseline.
        x, size, kwargs = timers.final_input
        out_size = (
            size
            if size is not None
            else tuple(int(v * kwargs["scale_factor"]) for v in x.shape[-2:])
        )
        bilinear = []
        for _ in range(args.repeat):
            _sync(args.device)
            start = time.perf_counter()
            with torch.no_grad():
                torch.nn.functional.interpolate(x, out_size, mode="bilinear", align_corners=False)
            _sync(args.device)
            bilinear.append(time.perf_counter() - start)
        ms = statistics.median(bilinear) * 1e3
        print(
            f"| (bilinear upsampling the final MSAU replaces, {tuple(x.shape[1:])} -> "
            f"{out_size}) | {ms:.1f} | |"
        )


if __name__ == "__main__":
    main()
