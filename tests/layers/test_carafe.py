"""The compiled CARAFE op against the pure-PyTorch reference, gradients and bad inputs."""

import itertools

import pytest
import torch

from freqfusion_d2.layers import CARAFE, carafe, carafe_ref
from freqfusion_d2.layers._ext import get_extension

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _compiled(features, masks, k, g, s):
    """The registered compiled op (bypasses the dispatcher's reference fallback)."""
    return torch.ops.freqfusion_d2.carafe_forward(features, masks, k, g, s)


def _inputs(n, c, h, w, k, g, s, dtype=torch.float64, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    masks = torch.randn(n, g * k * k, s * h, s * w, generator=gen, dtype=torch.float64)
    return features.to(device, dtype), masks.to(device, dtype)


def _loop_carafe(features, masks, k, g, s):
    """Literal loops over the definition (zero outside, floor mapping), for tiny sizes."""
    n, c, h, w = features.shape
    r = (k - 1) // 2
    out = torch.zeros(n, c, h * s, w * s, dtype=features.dtype)
    for b, ch, y, x in itertools.product(range(n), range(c), range(h * s), range(w * s)):
        grp = ch // (c // g)
        for i, j in itertools.product(range(k), range(k)):
            row, col = y // s + i - r, x // s + j - r
            if 0 <= row < h and 0 <= col < w:
                out[b, ch, y, x] += (
                    masks[b, grp * k * k + i * k + j, y, x] * features[b, ch, row, col]
                )
    return out


def test_extension_is_built():
    # CI builds the extension; a missing one must fail here rather than skip the comparisons.
    assert get_extension() is not None


@pytest.mark.parametrize("k,g,s", [(5, 1, 2), (3, 2, 1), (1, 1, 3), (3, 4, 3)])
def test_reference_matches_definition(k, g, s):
    features, masks = _inputs(1, 4, 3, 4, k, g, s)
    torch.testing.assert_close(
        carafe_ref(features, masks, k, g, s), _loop_carafe(features, masks, k, g, s)
    )


def test_uniform_kernel_loses_out_of_bounds_weight():
    # Uniform 5x5 kernel over a constant-1 map: a corner output sees 3x3 of the 25 taps
    # (9/25 = 0.36), one step in sees 4x4 (16/25 = 0.64), the centre of a 5x5 map all 25 (1.0).
    features = torch.ones(1, 1, 5, 5, dtype=torch.float64)
    masks = torch.full((1, 25, 5, 5), 1 / 25, dtype=torch.float64)
    out = carafe(features, masks, 5, 1, 1)
    assert out[0, 0, 0, 0].item() == pytest.approx(0.36)
    assert out[0, 0, 1, 1].item() == pytest.approx(0.64)
    assert out[0, 0, 2, 2].item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "k,g,s,h,w",
    [
        (k, g, s, h, w)
        for k in (1, 3, 5, 7)
        for g in (1, 2, 4)
        for s in (1, 2, 3)
        for h, w in [(5, 7)]
    ]
    + [(5, 1, 2, 1, 1), (3, 2, 2, 1, 6), (7, 1, 3, 2, 3), (5, 4, 2, 9, 4)],
)
def test_compiled_matches_reference_forward_and_backward(k, g, s, h, w):
    features, masks = _inputs(2, 8, h, w, k, g, s, seed=k * 100 + g * 10 + s)
    features.requires_grad_()
    masks.requires_grad_()
    out = carafe(features, masks, k, g, s)
    ref = carafe_ref(features, masks, k, g, s)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (features, masks), grad)
    want = torch.autograd.grad(ref, (features, masks), grad)
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[1], want[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k,g,s", [(3, 1, 2), (5, 2, 1), (3, 2, 3)])
def test_gradcheck(k, g, s):
    features, masks = _inputs(1, 4, 3, 4, k, g, s)
    features.requires_grad_()
    masks.requires_grad_()
    assert torch.autograd.gradcheck(lambda f, m: carafe(f, m, k, g, s), (features, masks))


def test_out_of_bounds_taps_get_exactly_zero_mask_gradient():
    k, s, h, w = 5, 2, 3, 4
    features, masks = _inputs(1, 3, h, w, k, 1, s)
    masks.requires_grad_()
    carafe(features, masks, k, 1, s).sum().backward()
    r = (k - 1) // 2
    for i, j in itertools.product(range(k), range(k)):
        for y, x in itertools.product(range(s * h), range(s * w)):
            row, col = y // s + i - r, x // s + j - r
            value = masks.grad[0, i * k + j, y, x].item()
            if 0 <= row < h and 0 <= col < w:
                assert value != 0.0
            else:
                assert value == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_close_to_float32(dtype):
    features, masks = _inputs(2, 16, 9, 7, 5, 2, 2, dtype=torch.float32)
    masks = masks.view(2, 2, 25, 18, 14).softmax(2).view(2, 50, 18, 14)
    ref = carafe(features, masks, 5, 2, 2)
    f_half, m_half = features.to(dtype).requires_grad_(), masks.to(dtype).requires_grad_()
    out = carafe(f_half, m_half, 5, 2, 2)
    assert out.dtype == dtype
    tol = 1e-2 if dtype == torch.float16 else 5e-2
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)
    out.float().sum().backward()
    f32, m32 = features.clone().requires_grad_(), masks.clone().requires_grad_()
    carafe(f32, m32, 5, 2, 2).sum().backward()
    torch.testing.assert_close(f_half.grad.float(), f32.grad, rtol=tol, atol=tol)
    torch.testing.assert_close(m_half.grad.float(), m32.grad, rtol=tol, atol=tol * 10)


def test_half_accumulates_in_float():
    # 63*63 = 3969 taps of about 1/3969 sum to about 1 in a float accumulator. A bfloat16
    # accumulator would stall near 0.5, where its spacing (2**-8) exceeds twice the increment.
    k = 63
    features = torch.ones(1, 1, 64, 64, dtype=torch.bfloat16)
    masks = torch.full((1, k * k, 64, 64), 1.0 / (k * k), dtype=torch.bfloat16)
    out = _compiled(features, masks, k, 1, 1)
    expected = (masks[0, 0, 0, 0].float() * k * k).item()
    assert out[0, 0, 32, 32].float().item() == pytest.approx(expected, rel=1e-2)


def test_backward_is_bitwise_repeatable():
    features, masks = _inputs(2, 32, 17, 13, 5, 4, 2, dtype=torch.float32)
    results = []
    for _ in range(3):
        f, m = features.clone().requires_grad_(), masks.clone().requires_grad_()
        out = carafe(f, m, 5, 4, 2)
        out.backward(torch.ones_like(out))
        results.append((f.grad, m.grad))
    for f_grad, m_grad in results[1:]:
        assert torch.equal(f_grad, results[0][0])
        assert torch.equal(m_grad, results[0][1])


def test_non_contiguous_inputs():
    features, masks = _inputs(2, 6, 5, 4, 3, 2, 2)
    f_nc = features.transpose(2, 3).contiguous().transpose(2, 3)
    m_nc = masks.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert not f_nc.is_contiguous() and not m_nc.is_contiguous()
    torch.testing.assert_close(carafe(f_nc, m_nc, 3, 2, 2), carafe_ref(features, masks, 3, 2, 2))


def test_empty_batch():
    features, masks = _inputs(0, 4, 5, 5, 3, 1, 2)
    features.requires_grad_()
    masks.requires_grad_()
    for fn in (carafe, carafe_ref):
        out = fn(features, masks, 3, 1, 2)
        assert out.shape == (0, 4, 10, 10)
        out.sum().backward()
        assert features.grad.shape == features.shape and masks.grad.shape == masks.shape


def test_mixed_dtypes_follow_features():
    features, masks = _inputs(1, 4, 4, 4, 3, 1, 2, dtype=torch.float32)
    f_half = features.half()
    m_float = masks.clone().requires_grad_()
    out = carafe(f_half, m_float, 3, 1, 2)
    assert out.dtype == torch.float16
    want = carafe(f_half.float(), masks.half().float(), 3, 1, 2)
    torch.testing.assert_close(out.float(), want, rtol=1e-3, atol=1e-3)
    out.float().sum().backward()
    assert m_float.grad.dtype == torch.float32


def test_module_wrapper():
    features, masks = _inputs(1, 4, 4, 5, 3, 2, 2)
    module = CARAFE(3, 2, 2)
    torch.testing.assert_close(module(features, masks), carafe_ref(features, masks, 3, 2, 2))
    assert "kernel_size=3" in repr(module)


@pytest.mark.parametrize(
    "shape_f,shape_m,k,g,s,match",
    [
        ((1, 4, 4, 4), (1, 9, 8, 8), 4, 1, 2, "kernel_size must be odd"),
        ((1, 4, 4, 4), (1, 18, 8, 8), 3, 3, 2, "group_size=3 must divide"),
        ((1, 4, 4, 4), (1, 9, 8, 7), 3, 1, 2, "masks must have shape"),
        ((1, 4, 4, 4), (1, 8, 8, 8), 3, 1, 2, "masks must have shape"),
        ((2, 4, 4, 4), (1, 9, 8, 8), 3, 1, 2, "masks must have shape"),
        ((4, 4, 4), (1, 9, 8, 8), 3, 1, 2, "features must be 4-D"),
        ((1, 4, 4, 4), (1, 9, 8, 8), 3, 1, 0, "scale_factor must be a positive int"),
    ],
)
def test_bad_inputs_raise_value_error(shape_f, shape_m, k, g, s, match):
    features, masks = torch.randn(*shape_f), torch.randn(*shape_m)
    for fn in (carafe, carafe_ref):
        with pytest.raises(ValueError, match=match):
            fn(features, masks, k, g, s)


def test_integer_dtype_rejected():
    with pytest.raises(ValueError, match="features must be float16"):
        carafe(torch.ones(1, 1, 2, 2, dtype=torch.int64), torch.ones(1, 1, 2, 2), 1, 1, 1)


def test_compiled_op_checks_inputs_itself():
    with pytest.raises(RuntimeError, match="same dtype"):
        _compiled(torch.randn(1, 1, 2, 2), torch.randn(1, 1, 2, 2).double(), 1, 1, 1)


def test_meta_tensors_trace_shapes():
    out = _compiled(
        torch.empty(2, 8, 5, 3, device="meta"), torch.empty(2, 18, 10, 6, device="meta"), 3, 2, 2
    )
    assert out.shape == (2, 8, 10, 6) and out.device.type == "meta"


@cuda_only
def test_mismatched_devices_raise_value_error():
    with pytest.raises(ValueError, match="same device"):
        carafe(torch.randn(1, 1, 2, 2).cuda(), torch.randn(1, 1, 2, 2), 1, 1, 1)


@cuda_only
@pytest.mark.parametrize("k,g,s", [(5, 1, 2), (3, 2, 1), (7, 4, 3), (1, 1, 2)])
def test_cuda_matches_reference(k, g, s):
    features, masks = _inputs(2, 8, 7, 5, k, g, s, device="cuda")
    features.requires_grad_()
    masks.requires_grad_()
    out = carafe(features, masks, k, g, s)
    ref = carafe_ref(features.detach().cpu(), masks.detach().cpu(), k, g, s)
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (features, masks), grad)
    f, m = features.detach().cpu().requires_grad_(), masks.detach().cpu().requires_grad_()
    want = torch.autograd.grad(carafe_ref(f, m, k, g, s), (f, m), grad.cpu())
    torch.testing.assert_close(got[0].cpu(), want[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[1].cpu(), want[1], rtol=1e-12, atol=1e-12)


@cuda_only
def test_cuda_gradcheck_and_determinism():
    features, masks = _inputs(1, 4, 3, 4, 3, 2, 2, device="cuda")
    features.requires_grad_()
    masks.requires_grad_()
    assert torch.autograd.gradcheck(lambda f, m: carafe(f, m, 3, 2, 2), (features, masks))
    f32, m32 = features.float().detach(), masks.float().detach()
    grads = []
    for _ in range(2):
        f, m = f32.clone().requires_grad_(), m32.clone().requires_grad_()
        carafe(f, m, 3, 2, 2).sum().backward()
        grads.append((f.grad, m.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_close_to_float32(dtype):
    features, masks = _inputs(2, 16, 9, 7, 5, 2, 2, dtype=torch.float32, device="cuda")
    masks = masks.view(2, 2, 25, 18, 14).softmax(2).view(2, 50, 18, 14)
    ref = carafe(features, masks, 5, 2, 2)
    out = carafe(features.to(dtype), masks.to(dtype), 5, 2, 2)
    torch.testing.assert_close(out.float(), ref, rtol=5e-2, atol=5e-2)


@cuda_only
def test_cuda_large_kernel_group_product():
    # k*k*G = 7*7*16 = 784 > 384, the silent limit of mmcv's fast kernel.
    features, masks = _inputs(1, 32, 6, 5, 7, 16, 2, dtype=torch.float32, device="cuda")
    ref = carafe_ref(features.cpu(), masks.cpu(), 7, 16, 2)
    torch.testing.assert_close(carafe(features, masks, 7, 16, 2).cpu(), ref, rtol=1e-4, atol=1e-4)
