"""Seeded fuzzing of the compiled CARAFE and multi-scale deformable attention ops against their
pure-PyTorch references: random shapes, dtypes (float64/32, bfloat16, float16) and memory
layouts (contiguous, channels-last, strided views). Each case checks the forward against the
reference evaluated in float64, the gradients (float32/64) against the reference's, and that the
backward is bitwise repeatable. Deterministic: case ``i`` draws everything from seed ``i``."""

import numpy as np
import pytest
import torch

from freqfusion_d2.layers import carafe, carafe_ref, ms_deform_attn, ms_deform_attn_ref
from freqfusion_d2.layers._ext import get_extension, has_kernel_for

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
# (rtol, atol relative to the largest reference value) per dtype.
TOLERANCE = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (3e-2, 2e-2),
    torch.float16: (4e-3, 2e-3),
}
LAYOUTS = ["contiguous", "channels_last", "strided"]

pytestmark = pytest.mark.skipif(get_extension() is None, reason="needs the compiled extension")
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    ),
]


def test_the_compiled_kernels_are_the_ones_fuzzed():
    # Without a CPU kernel the dispatchers would compare the references with themselves.
    assert has_kernel_for(torch.device("cpu"))
    assert hasattr(torch.ops.freqfusion_d2, "carafe_forward")
    assert hasattr(torch.ops.freqfusion_d2, "ms_deform_attn_forward")


def _layout(t, layout):
    """``t`` (values unchanged) in the given memory layout."""
    if layout == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        # A view into a larger buffer: every second element of the last dimension.
        big = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        big[..., ::2] = t
        view = big[..., ::2]
        assert not view.is_contiguous() or t.shape[-1] == 1
        return view
    return t.contiguous()


def _close(actual, expected, dtype, what):
    rtol, atol = TOLERANCE[dtype]
    scale = float(expected.abs().max()) if expected.numel() else 1.0
    torch.testing.assert_close(
        actual.double(), expected.double(), rtol=rtol, atol=atol * max(scale, 1.0), msg=what
    )


def _backward(fn, inputs, grad_out):
    leaves = [t.detach().requires_grad_(True) for t in inputs]
    fn(*leaves).backward(grad_out)
    return [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", range(36))
def test_carafe_fuzz(case, device):
    rng = np.random.default_rng(case)
    k = int(rng.choice([1, 3, 5]))
    g = int(rng.choice([1, 2, 4]))
    s = int(rng.choice([1, 2, 3]))
    n, c = int(rng.integers(1, 3)), g * int(rng.integers(1, 4))
    h, w = int(rng.integers(1, 7)), int(rng.integers(1, 7))
    dtype = DTYPES[case % len(DTYPES)]
    layout = LAYOUTS[(case // len(DTYPES)) % len(LAYOUTS)]
    gen = torch.Generator().manual_seed(case)
    features64 = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    masks64 = torch.randn(n, g * k * k, s * h, s * w, generator=gen, dtype=torch.float64)
    features = _layout(features64.to(device, dtype), layout)
    masks = _layout(masks64.to(device, dtype), layout)
    what = f"case {case}: k={k} g={g} s={s} {tuple(features.shape)} {dtype} {layout} {device}"

    out = carafe(features, masks, k, g, s)
    assert out.dtype == dtype and out.shape == (n, c, s * h, s * w), what
    assert bool(torch.isfinite(out).all()), what
    # The reference on the same (rounded) values, in float64.
    ref = carafe_ref(features.double(), masks.double(), k, g, s)
    _close(out, ref, dtype, what)

    grad_out = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(device, dtype)
    grads = _backward(lambda f, m: carafe(f, m, k, g, s), [features, masks], grad_out)
    again = _backward(lambda f, m: carafe(f, m, k, g, s), [features, masks], grad_out)
    for a, b in zip(grads, again):
        assert torch.equal(a, b), f"{what}: backward is not repeatable"
    if dtype in (torch.float64, torch.float32):
        ref_grads = _backward(
            lambda f, m: carafe_ref(f, m, k, g, s),
            [features.double(), masks.double()],
            grad_out.double(),
        )
        for name, a, b in zip(("features", "masks"), grads, ref_grads):
            _close(a, b, dtype, f"{what}: grad {name}")


def _levels(rng):
    shapes = [(int(rng.integers(1, 6)), int(rng.integers(1, 6))) for _ in range(rng.integers(1, 4))]
    spatial = torch.tensor(shapes, dtype=torch.int64)
    sizes = spatial[:, 0] * spatial[:, 1]
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return spatial, starts, int(sizes.sum())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", range(24))
def test_ms_deform_attn_fuzz(case, device):
    rng = np.random.default_rng(1000 + case)
    spatial, starts, total = _levels(rng)
    num_levels = spatial.shape[0]
    n, lq = int(rng.integers(1, 3)), int(rng.integers(1, 6))
    m, d, p = int(rng.integers(1, 4)), int(rng.choice([1, 2, 4, 8])), int(rng.integers(1, 4))
    dtype = DTYPES[case % len(DTYPES)]
    layout = ["contiguous", "strided"][(case // len(DTYPES)) % 2]
    gen = torch.Generator().manual_seed(1000 + case)
    value64 = torch.randn(n, total, m, d, generator=gen, dtype=torch.float64)
    # Locations in [-0.3, 1.3]: some samples fall outside the maps (zero padding).
    loc64 = torch.rand(n, lq, m, num_levels, p, 2, generator=gen, dtype=torch.float64) * 1.6 - 0.3
    weights64 = torch.rand(n, lq, m, num_levels, p, generator=gen, dtype=torch.float64)
    spatial, starts = spatial.to(device), starts.to(device)
    value, loc, weights = (
        _layout(t.to(device, dtype), layout) for t in (value64, loc64, weights64)
    )
    what = f"case {case}: levels {spatial.tolist()} N={n} Lq={lq} M={m} D={d} P={p}"
    what += f" {dtype} {layout} {device}"

    out = ms_deform_attn(value, spatial, starts, loc, weights)
    assert out.dtype == dtype and out.shape == (n, lq, m * d), what
    assert bool(torch.isfinite(out).all()), what
    ref = ms_deform_attn_ref(value.double(), spatial, starts, loc.double(), weights.double())
    _close(out, ref, dtype, what)

    grad_out = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(device, dtype)

    def op(v, s_loc, a):
        return ms_deform_attn(v, spatial, starts, s_loc, a)

    grads = _backward(op, [value, loc, weights], grad_out)
    again = _backward(op, [value, loc, weights], grad_out)
    for a, b in zip(grads, again):
        assert torch.equal(a, b), f"{what}: backward is not repeatable"
    if dtype in (torch.float64, torch.float32):
        ref_grads = _backward(
            lambda v, s_loc, a: ms_deform_attn_ref(v, spatial, starts, s_loc, a),
            [value.double(), loc.double(), weights.double()],
            grad_out.double(),
        )
        # Random locations almost surely avoid the grid lines where bilinear sampling has no
        # derivative, so the location gradients are compared too.
        for name, a, b in zip(
            ("value", "sampling_locations", "attention_weights"), grads, ref_grads
        ):
            _close(a, b, dtype, f"{what}: grad {name}")
