"""MSDeformAttn: compiled op against the pure-PyTorch reference, gradients, bad inputs, module."""

import itertools
import math

import pytest
import torch

from freqfusion_d2.layers import MSDeformAttn, ms_deform_attn, ms_deform_attn_ref
from freqfusion_d2.layers._ext import get_extension

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _compiled(*args):
    """The registered compiled forward (bypasses the dispatcher's reference fallback)."""
    return torch.ops.freqfusion_d2.ms_deform_attn_forward(*args)


def _levels(shapes, device="cpu"):
    spatial = torch.tensor(shapes, dtype=torch.int64, device=device)
    sizes = spatial[:, 0] * spatial[:, 1]
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return spatial, starts, int(sizes.sum())


def _inputs(n, lq, m, d, shapes, p, dtype=torch.float64, device="cpu", seed=0, spread=0.3):
    """Random inputs; locations cover [-spread, 1 + spread], so some fall outside the maps."""
    gen = torch.Generator().manual_seed(seed)
    spatial, starts, s = _levels(shapes)
    num_levels = len(shapes)
    value = torch.randn(n, s, m, d, generator=gen, dtype=torch.float64)
    loc = torch.rand(n, lq, m, num_levels, p, 2, generator=gen, dtype=torch.float64)
    loc = loc * (1 + 2 * spread) - spread
    weights = torch.rand(n, lq, m, num_levels, p, generator=gen, dtype=torch.float64)
    cast = dict(device=device, dtype=dtype)
    return (
        value.to(**cast),
        spatial.to(device),
        starts.to(device),
        loc.to(**cast),
        weights.to(**cast),
    )


def _loop_ms_deform_attn(value, spatial, starts, loc, weights):
    """Literal loops over the definition (pixel centres at integers, zero outside)."""
    n, _, m, d = value.shape
    _, lq, _, num_levels, p, _ = loc.shape
    out = torch.zeros(n, lq, m, d, dtype=value.dtype)
    for b, q, h, lvl, pt in itertools.product(
        range(n), range(lq), range(m), range(num_levels), range(p)
    ):
        height, width = spatial[lvl].tolist()
        u = loc[b, q, h, lvl, pt, 0].item() * width - 0.5
        v = loc[b, q, h, lvl, pt, 1].item() * height - 0.5
        x0, y0 = math.floor(u), math.floor(v)
        for dy, dx in itertools.product((0, 1), (0, 1)):
            y, x = y0 + dy, x0 + dx
            if 0 <= y < height and 0 <= x < width:
                w = (v - y0 if dy else 1 - (v - y0)) * (u - x0 if dx else 1 - (u - x0))
                row = int(starts[lvl]) + y * width + x
                out[b, q, h] += weights[b, q, h, lvl, pt] * w * value[b, row, h]
    return out.view(n, lq, m * d)


SHAPES = [
    # (n, lq, m, d, level shapes, points)
    (2, 7, 2, 3, [(5, 3), (3, 1), (1, 7)], 3),
    (1, 5, 3, 4, [(7, 9)], 1),
    (3, 4, 1, 5, [(3, 5), (1, 1)], 4),
    (1, 9, 4, 2, [(9, 5), (5, 3), (3, 1), (1, 1)], 2),
]


def test_extension_has_the_op():
    # CI builds the extension; a missing op must fail here rather than silently test the fallback.
    assert get_extension() is not None
    assert hasattr(torch.ops.freqfusion_d2, "ms_deform_attn_forward")
    assert hasattr(torch.ops.freqfusion_d2, "ms_deform_attn_backward")


@pytest.mark.parametrize(
    "case", [(1, 3, 2, 3, [(5, 3), (3, 1), (1, 7)], 2), (2, 2, 1, 2, [(3, 5), (1, 1)], 3)]
)
def test_reference_matches_definition(case):
    n, lq, m, d, shapes, p = case
    args = _inputs(n, lq, m, d, shapes, p)
    torch.testing.assert_close(ms_deform_attn_ref(*args), _loop_ms_deform_attn(*args))


def test_hand_checked_samples():
    # One 2x2 level holding 1, 2 / 3, 4; pixel centres are at 0.25 and 0.75.
    value = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).view(1, 4, 1, 1)
    spatial, starts, _ = _levels([(2, 2)])
    points = [(0.25, 0.25), (0.75, 0.25), (0.5, 0.5), (0.0, 0.0), (0.5, 1.0), (1.5, 0.5)]
    expected = [1.0, 2.0, 2.5, 0.25, 1.75, 0.0]
    loc = torch.tensor(points, dtype=torch.float64).view(1, len(points), 1, 1, 1, 2)
    weights = torch.ones(1, len(points), 1, 1, 1, dtype=torch.float64)
    for fn in (ms_deform_attn, ms_deform_attn_ref):
        out = fn(value, spatial, starts, loc, weights)
        assert out.flatten().tolist() == pytest.approx(expected)


@pytest.mark.parametrize("case", SHAPES)
def test_compiled_matches_reference_forward_and_backward(case):
    n, lq, m, d, shapes, p = case
    value, spatial, starts, loc, weights = _inputs(n, lq, m, d, shapes, p, seed=len(shapes))
    inputs = [t.requires_grad_() for t in (value, loc, weights)]
    out = _compiled(value, spatial, starts, loc, weights)
    dispatched = ms_deform_attn(value, spatial, starts, loc, weights)
    ref = ms_deform_attn_ref(value, spatial, starts, loc, weights)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(dispatched, inputs, grad)
    want = torch.autograd.grad(ref, inputs, grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


def test_gradcheck():
    value, spatial, starts, loc, weights = _inputs(1, 3, 2, 2, [(3, 2), (2, 3)], 2)
    inputs = tuple(t.requires_grad_() for t in (value, loc, weights))

    def fn(v, sl, aw):
        return ms_deform_attn(v, spatial, starts, sl, aw)

    assert torch.autograd.gradcheck(fn, inputs)


def test_backward_is_bitwise_repeatable_across_thread_counts():
    value, spatial, starts, loc, weights = _inputs(
        2, 64, 4, 8, [(12, 10), (6, 5), (3, 3)], 4, dtype=torch.float32
    )
    threads = torch.get_num_threads()
    results = []
    try:
        for num_threads in (1, max(2, threads), max(2, threads)):
            torch.set_num_threads(num_threads)
            v, sl, aw = (t.clone().requires_grad_() for t in (value, loc, weights))
            out = ms_deform_attn(v, spatial, starts, sl, aw)
            out.backward(torch.ones_like(out))
            results.append((v.grad, sl.grad, aw.grad))
    finally:
        torch.set_num_threads(threads)
    for grads in results[1:]:
        for g, g0 in zip(grads, results[0]):
            assert torch.equal(g, g0)


def test_samples_outside_get_zero_gradients():
    value, spatial, starts, loc, weights = _inputs(1, 4, 1, 3, [(4, 4)], 2)
    loc[..., 0, 0] = -0.5
    loc[..., 1, 0] = 1.5
    loc.requires_grad_()
    weights.requires_grad_()
    out = ms_deform_attn(value, spatial, starts, loc, weights)
    assert torch.count_nonzero(out) == 0
    out.sum().backward()
    assert torch.count_nonzero(loc.grad) == 0 and torch.count_nonzero(weights.grad) == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_close_to_float32(dtype):
    value, spatial, starts, loc, weights = _inputs(
        2, 16, 2, 8, [(9, 7), (5, 4)], 4, dtype=torch.float32, spread=0.0
    )
    weights = weights / weights.sum((-1, -2), keepdim=True)
    ref = ms_deform_attn_ref(value, spatial, starts, loc, weights)
    out = ms_deform_attn(value.to(dtype), spatial, starts, loc.to(dtype), weights.to(dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, rtol=5e-2, atol=5e-2)
    v = value.to(dtype).requires_grad_()
    ms_deform_attn(v, spatial, starts, loc.to(dtype), weights.to(dtype)).float().sum().backward()
    v32 = value.clone().requires_grad_()
    ms_deform_attn_ref(v32, spatial, starts, loc, weights).sum().backward()
    torch.testing.assert_close(v.grad.float(), v32.grad, rtol=5e-2, atol=5e-2)


def test_mixed_dtypes_follow_value():
    value, spatial, starts, loc, weights = _inputs(1, 5, 2, 4, [(4, 3)], 2, dtype=torch.float32)
    loc64 = loc.double().requires_grad_()
    out = ms_deform_attn(value, spatial, starts, loc64, weights.double())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ms_deform_attn_ref(value, spatial, starts, loc, weights))
    out.sum().backward()
    assert loc64.grad.dtype == torch.float64


def test_non_contiguous_inputs():
    value, spatial, starts, loc, weights = _inputs(2, 6, 2, 3, [(3, 4), (2, 2)], 2)
    value_nc = value.transpose(2, 3).contiguous().transpose(2, 3)
    loc_nc = loc.transpose(0, 1).contiguous().transpose(0, 1)
    assert not value_nc.is_contiguous() and not loc_nc.is_contiguous()
    torch.testing.assert_close(
        ms_deform_attn(value_nc, spatial, starts, loc_nc, weights),
        ms_deform_attn_ref(value, spatial, starts, loc, weights),
    )


def test_empty_queries():
    value, spatial, starts, loc, weights = _inputs(2, 0, 2, 3, [(3, 4)], 2)
    value.requires_grad_()
    for fn in (ms_deform_attn, ms_deform_attn_ref):
        out = fn(value, spatial, starts, loc, weights)
        assert out.shape == (2, 0, 6)
        out.sum().backward()
        assert value.grad.shape == value.shape


def _bad(**changes):
    value, spatial, starts, loc, weights = _inputs(1, 3, 2, 4, [(3, 4), (2, 2)], 2)
    args = dict(
        value=value,
        value_spatial_shapes=spatial,
        value_level_start_index=starts,
        sampling_locations=loc,
        attention_weights=weights,
    )
    args.update(changes)
    return args


@pytest.mark.parametrize(
    "changes,match",
    [
        (dict(value=torch.randn(16, 2, 4)), "value must be 4-D"),
        (dict(value=torch.randn(1, 15, 2, 4)), "value has S=15 rows"),
        (dict(value=torch.ones(1, 16, 2, 4, dtype=torch.int64)), "value must be float16"),
        (dict(value_spatial_shapes=torch.tensor([[3, 4], [2, 2]]).float()), "must be int64"),
        (dict(value_spatial_shapes=torch.tensor([3, 4, 2, 2])), r"must have shape \(L, 2\)"),
        (dict(value_level_start_index=torch.tensor([0, 11])), r"value_level_start_index\[1\]"),
        (dict(value_level_start_index=torch.tensor([0])), r"must have shape \(L,\)"),
        (dict(sampling_locations=torch.rand(1, 3, 2, 2, 2)), "must be 6-D"),
        (dict(sampling_locations=torch.rand(1, 3, 1, 2, 2, 2).double()), "must be"),
        (dict(sampling_locations=torch.rand(1, 3, 2, 3, 2, 2).double()), "L=2"),
        (dict(attention_weights=torch.rand(1, 3, 2, 2, 3).double()), "attention_weights must"),
        (dict(attention_weights=torch.rand(1, 3, 2, 2, 2, device="meta")), "must be on the device"),
    ],
)
def test_bad_inputs_raise_value_error(changes, match):
    for fn in (ms_deform_attn, ms_deform_attn_ref):
        with pytest.raises(ValueError, match=match):
            fn(**_bad(**changes))


def test_bad_im2col_step():
    with pytest.raises(ValueError, match="im2col_step"):
        ms_deform_attn(**_bad(), im2col_step=0)


def test_compiled_op_checks_inputs_itself():
    value, spatial, starts, loc, weights = _inputs(1, 3, 2, 4, [(3, 4)], 2)
    with pytest.raises(RuntimeError, match="same dtype"):
        _compiled(value, spatial, starts, loc.float(), weights)
    with pytest.raises(RuntimeError, match="does not fit"):
        _compiled(value, torch.tensor([[4, 4]]), starts, loc, weights)
    value2, spatial2, _, loc2, weights2 = _inputs(1, 3, 2, 4, [(2, 2), (2, 2)], 2)
    with pytest.raises(RuntimeError, match="overlap"):
        _compiled(value2, spatial2, torch.tensor([0, 2]), loc2, weights2)


def test_meta_tensors_trace_shapes():
    meta = dict(device="meta")
    out = _compiled(
        torch.empty(2, 20, 4, 8, **meta),
        torch.empty(2, 2, dtype=torch.int64, **meta),
        torch.empty(2, dtype=torch.int64, **meta),
        torch.empty(2, 5, 4, 2, 3, 2, **meta),
        torch.empty(2, 5, 4, 2, 3, **meta),
    )
    assert out.shape == (2, 5, 32) and out.device.type == "meta"


def test_fake_kernels_agree_with_the_compiled_op():
    value, spatial, starts, loc, weights = _inputs(1, 3, 2, 4, [(3, 4), (2, 2)], 2)
    grad = torch.randn(1, 3, 8, dtype=torch.float64)
    checks = ("test_schema", "test_faketensor")
    ops = torch.ops.freqfusion_d2
    cases = [
        (ops.ms_deform_attn_forward.default, (value, spatial, starts, loc, weights)),
        (ops.ms_deform_attn_backward.default, (grad, value, spatial, starts, loc, weights)),
    ]
    for op, args in cases:
        results = torch.library.opcheck(op, args, test_utils=checks)
        assert all(r == "SUCCESS" for r in results.values()), results


def test_module_parameters_match_upstream():
    module = MSDeformAttn(d_model=256, n_levels=3, n_heads=8, n_points=4)
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert shapes == {
        "sampling_offsets.weight": (192, 256),
        "sampling_offsets.bias": (192,),
        "attention_weights.weight": (96, 256),
        "attention_weights.bias": (96,),
        "value_proj.weight": (256, 256),
        "value_proj.bias": (256,),
        "output_proj.weight": (256, 256),
        "output_proj.bias": (256,),
    }
    assert MSDeformAttn().sampling_offsets.out_features == 8 * 4 * 4 * 2


def test_module_init():
    module = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3)
    assert torch.count_nonzero(module.sampling_offsets.weight) == 0
    assert torch.count_nonzero(module.attention_weights.weight) == 0
    assert torch.count_nonzero(module.attention_weights.bias) == 0
    assert torch.count_nonzero(module.value_proj.bias) == 0
    # Head m points along angle 2*pi*m/4 (right, down, left, up), point p at (p + 1) pixels.
    bias = module.sampling_offsets.bias.view(4, 2, 3, 2)
    directions = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    steps = torch.tensor([1.0, 2.0, 3.0])
    want = directions[:, None, None, :] * steps[None, None, :, None]
    torch.testing.assert_close(bias, want.expand(4, 2, 3, 2), atol=1e-6, rtol=0)
    # Eight heads: the diagonal heads are scaled so that their larger coordinate is 1.
    bias8 = MSDeformAttn(n_heads=8, n_levels=1, n_points=1).sampling_offsets.bias.view(8, 2)
    torch.testing.assert_close(bias8[1], torch.tensor([1.0, 1.0]))


def test_module_rejects_bad_arguments():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        MSDeformAttn(d_model=30, n_heads=8)
    with pytest.raises(ValueError, match="n_points must be a positive int"):
        MSDeformAttn(n_points=0)


def _module_inputs(module, n=2, shapes=((6, 5), (3, 3)), ref_dim=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    spatial, starts, s = _levels(list(shapes))
    x = torch.randn(n, s, module.d_model, generator=gen)
    ref = torch.rand(n, s, len(shapes), ref_dim, generator=gen)
    return x, ref, spatial, starts


@pytest.mark.parametrize("ref_dim", [2, 4])
def test_module_forward(ref_dim):
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3)
    # Non-zero offset weights so that the queries actually steer the samples.
    torch.nn.init.normal_(module.sampling_offsets.weight, std=0.1)
    torch.nn.init.normal_(module.attention_weights.weight, std=0.1)
    x, ref, spatial, starts = _module_inputs(module, ref_dim=ref_dim)
    x.requires_grad_()
    out = module(x, ref, x, spatial, starts)
    assert out.shape == x.shape
    out.sum().backward()
    assert module.sampling_offsets.weight.grad.abs().sum() > 0
    assert x.grad.shape == x.shape


def test_module_reference_box_variant():
    # Box references (cx, cy, w, h) scale the offsets by 0.5 * (w, h) / n_points. With P = 2 and
    # a 4x4 level, a box of size 1x1 gives the same locations as 2-D references, whose offsets
    # are divided by (W, H) = (4, 4).
    module = MSDeformAttn(d_model=8, n_levels=1, n_heads=2, n_points=2)
    torch.nn.init.normal_(module.sampling_offsets.weight, std=0.5)
    x, ref, spatial, starts = _module_inputs(module, shapes=((4, 4),), ref_dim=4)
    ref[..., 2:] = 1.0
    torch.testing.assert_close(
        module(x, ref, x, spatial, starts), module(x, ref[..., :2], x, spatial, starts)
    )
    ref[..., 2:] = 0.5
    assert not torch.allclose(
        module(x, ref, x, spatial, starts), module(x, ref[..., :2], x, spatial, starts)
    )


def test_module_padding_mask_zeroes_values():
    module = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=2)
    x, ref, spatial, starts = _module_inputs(module, n=1)
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    out = module(x, ref, x, spatial, starts, input_padding_mask=mask)
    torch.testing.assert_close(out, module.output_proj.bias.expand_as(out))


def test_module_bad_reference_points():
    module = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=2)
    x, ref, spatial, starts = _module_inputs(module)
    with pytest.raises(ValueError, match="must be 2 or 4"):
        module(x, torch.rand(*ref.shape[:3], 3), x, spatial, starts)
    with pytest.raises(ValueError, match="reference_points must be"):
        module(x, ref[:, :, :1], x, spatial, starts)


@cuda_only
@pytest.mark.parametrize("case", SHAPES)
def test_cuda_matches_reference(case):
    n, lq, m, d, shapes, p = case
    value, spatial, starts, loc, weights = _inputs(n, lq, m, d, shapes, p, device="cuda")
    inputs = [t.requires_grad_() for t in (value, loc, weights)]
    out = ms_deform_attn(value, spatial, starts, loc, weights)
    cpu_inputs = [t.detach().cpu().requires_grad_() for t in inputs]
    ref = ms_deform_attn_ref(cpu_inputs[0], spatial.cpu(), starts.cpu(), *cpu_inputs[1:])
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(out, inputs, grad.cuda())
    want = torch.autograd.grad(ref, cpu_inputs, grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.cpu(), w, rtol=1e-10, atol=1e-10)


@cuda_only
def test_cuda_gradcheck():
    value, spatial, starts, loc, weights = _inputs(1, 3, 2, 2, [(3, 2), (2, 3)], 2, device="cuda")
    inputs = tuple(t.requires_grad_() for t in (value, loc, weights))

    def fn(v, sl, aw):
        return ms_deform_attn(v, spatial, starts, sl, aw)

    assert torch.autograd.gradcheck(fn, inputs)


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_cuda_low_precision_close_to_reference(dtype):
    value, spatial, starts, loc, weights = _inputs(
        2, 32, 4, 8, [(9, 7), (5, 4)], 4, dtype=torch.float32, device="cuda", spread=0.0
    )
    weights = weights / weights.sum((-1, -2), keepdim=True)
    ref = ms_deform_attn_ref(value, spatial, starts, loc, weights)
    out = ms_deform_attn(value.to(dtype), spatial, starts, loc.to(dtype), weights.to(dtype))
    assert out.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)
