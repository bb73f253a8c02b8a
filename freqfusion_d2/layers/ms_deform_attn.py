"""Multi-scale deformable attention (Zhu et al., ICLR 2021) for Mask2Former.

``ms_deform_attn`` runs the compiled kernels of ``freqfusion_d2._C`` (CPU, and CUDA when built) and
falls back to ``ms_deform_attn_ref`` when they are missing. Both compute, for every batch element
``n``, query ``q`` and head ``m``:

    out[n, q, m*D:(m+1)*D] = sum_{l, p} attention_weights[n, q, m, l, p]
                             * bilinear(value_l[n, :, m, :], sampling_locations[n, q, m, l, p])

where ``value_l`` is the ``(H_l, W_l)`` map of level ``l`` (rows ``level_start_index[l]`` to
``level_start_index[l] + H_l * W_l`` of ``value``, row-major) and a normalised location ``(x, y)``
samples the pixel-space point ``(x * W_l - 0.5, y * H_l - 0.5)``: pixel centres are at integers,
neighbours outside the map contribute zero. This is exactly
``F.grid_sample(value_l, 2 * loc - 1, mode="bilinear", padding_mode="zeros", align_corners=False)``.

While a model is exported to ONNX, :func:`ms_deform_attn` computes the same function with
standard operators (:func:`freqfusion_d2.layers.decomposed.ms_deform_attn_decomposed`).

Dtype rule: the output has the dtype of ``value``; ``sampling_locations`` and ``attention_weights``
of another floating dtype are cast to it first (their gradients come back in their own dtype).
Half and bfloat16 are accumulated in float32 by the compiled kernels.

Determinism: the CPU backward has no atomics and is bitwise repeatable for any number of threads.
The CUDA backward scatters into the value gradient with atomic adds, so its ``grad_value`` can
differ in the last bits from run to run.
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ._ext import get_extension, has_kernel_for
from .decomposed import ms_deform_attn_decomposed

__all__ = ["ms_deform_attn", "ms_deform_attn_ref", "MSDeformAttn"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_OP_NAMES = ("ms_deform_attn_forward", "ms_deform_attn_backward")


def _check_args(
    value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights
):
    tensors = (
        ("value", value),
        ("value_spatial_shapes", value_spatial_shapes),
        ("value_level_start_index", value_level_start_index),
        ("sampling_locations", sampling_locations),
        ("attention_weights", attention_weights),
    )
    for name, t in tensors:
        if not isinstance(t, torch.Tensor):
            raise TypeError(
                f"ms_deform_attn: {name} must be a torch.Tensor, got {type(t).__name__}"
            )
        if t.device != value.device:
            raise ValueError(
                f"ms_deform_attn: {name} must be on the device of value ({value.device}), "
                f"got {t.device}"
            )
    for name, t in tensors[0:1] + tensors[3:]:
        if t.dtype not in _FLOAT_DTYPES:
            raise ValueError(
                f"ms_deform_attn: {name} must be float16, bfloat16, float32 or float64, "
                f"got {t.dtype}"
            )
    for name, t in tensors[1:3]:
        if t.dtype != torch.int64:
            raise ValueError(f"ms_deform_attn: {name} must be int64, got {t.dtype}")
    if value.dim() != 4:
        raise ValueError(
            f"ms_deform_attn: value must be 4-D (N, S, M, D), got shape {tuple(value.shape)}"
        )
    n, s, m, _ = value.shape
    if value_spatial_shapes.dim() != 2 or value_spatial_shapes.shape[1] != 2:
        raise ValueError(
            "ms_deform_attn: value_spatial_shapes must have shape (L, 2) holding (H, W) per "
            f"level, got {tuple(value_spatial_shapes.shape)}"
        )
    num_levels = value_spatial_shapes.shape[0]
    if tuple(value_level_start_index.shape) != (num_levels,):
        raise ValueError(
            f"ms_deform_attn: value_level_start_index must have shape (L,) = ({num_levels},), "
            f"got {tuple(value_level_start_index.shape)}"
        )
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            "ms_deform_attn: sampling_locations must be 6-D (N, Lq, M, L, P, 2), got shape "
            f"{tuple(sampling_locations.shape)}"
        )
    nq, lq, mq, lq_levels, p, _ = sampling_locations.shape
    if (nq, mq, lq_levels) != (n, m, num_levels):
        raise ValueError(
            f"ms_deform_attn: sampling_locations {tuple(sampling_locations.shape)} must be "
            f"(N, Lq, M, L, P, 2) with N={n} and M={m} from value {tuple(value.shape)} and "
            f"L={num_levels} from value_spatial_shapes"
        )
    if tuple(attention_weights.shape) != (n, lq, m, num_levels, p):
        raise ValueError(
            f"ms_deform_attn: attention_weights must have shape (N, Lq, M, L, P) = "
            f"{(n, lq, m, num_levels, p)}, got {tuple(attention_weights.shape)}"
        )
    if value.device.type == "cpu" and not _is_capturing():
        # Value checks only where they cost no device synchronisation and the level table is
        # not symbolic; the CUDA kernels guard their own memory accesses against inconsistent
        # level tables.
        shapes = value_spatial_shapes.tolist()
        starts = value_level_start_index.tolist()
        offset = 0
        for level, ((h, w), start) in enumerate(zip(shapes, starts)):
            if h < 0 or w < 0:
                raise ValueError(
                    f"ms_deform_attn: value_spatial_shapes[{level}] = {(h, w)} is negative"
                )
            if start != offset:
                raise ValueError(
                    f"ms_deform_attn: value_level_start_index[{level}] must be {offset} (the sum "
                    f"of H*W of the levels before it), got {start}"
                )
            offset += h * w
        if offset != s:
            raise ValueError(
                f"ms_deform_attn: value has S={s} rows but value_spatial_shapes covers "
                f"sum(H*W) = {offset}"
            )


def _is_capturing() -> bool:
    """Whether a graph is being captured (torch.compile / torch.export, tracing, ONNX export)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def ms_deform_attn_ref(
    value: torch.Tensor,
    value_spatial_shapes: torch.Tensor,
    value_level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    im2col_step: int = 64,
) -> torch.Tensor:
    """Pure-PyTorch multi-scale deformable attention, one ``grid_sample`` per level.

    Same arguments, semantics and result as :func:`ms_deform_attn`. It materialises a
    (N*M, D, Lq, L*P) tensor, so it is the fallback and the oracle of the tests rather than the
    fast path. ``im2col_step`` is accepted for signature compatibility and unused.
    """
    _check_args(
        value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights
    )
    dtype = value.dtype
    sampling_locations = sampling_locations.to(dtype)
    attention_weights = attention_weights.to(dtype)
    n, _, m, d = value.shape
    _, lq, _, num_levels, p, _ = sampling_locations.shape
    if n * lq * m * d == 0 or num_levels * p == 0:
        # grid_sample rejects empty batches; keep the result connected to the inputs.
        zero = (value.sum() + sampling_locations.sum() + attention_weights.sum()) * 0
        return value.new_zeros((n, lq, m * d)) + zero
    shapes = [(int(h), int(w)) for h, w in value_spatial_shapes.tolist()]
    starts = [int(s) for s in value_level_start_index.tolist()]
    # (N, Lq, M, L, P, 2) -> (N*M, Lq, L, P, 2) in grid_sample's [-1, 1] convention.
    grids = (2 * sampling_locations - 1).transpose(1, 2).flatten(0, 1)
    samples = []
    for level, ((h, w), start) in enumerate(zip(shapes, starts)):
        # (N, H*W, M, D) -> (N*M, D, H, W)
        value_l = value.narrow(1, start, h * w).permute(0, 2, 3, 1).reshape(n * m, d, h, w)
        sampled = F.grid_sample(
            value_l,
            grids[:, :, level],
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
        samples.append(sampled)  # (N*M, D, Lq, P)
    stacked = torch.stack(samples, dim=3).flatten(-2)  # (N*M, D, Lq, L*P)
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, num_levels * p)
    out = (stacked * weights).sum(-1).view(n, m * d, lq)
    return out.transpose(1, 2).contiguous()


class _MSDeformAttnFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        value,
        value_spatial_shapes,
        value_level_start_index,
        sampling_locations,
        attention_weights,
    ):
        value = value.contiguous()
        sampling_locations = sampling_locations.contiguous()
        attention_weights = attention_weights.contiguous()
        ctx.save_for_backward(
            value,
            value_spatial_shapes,
            value_level_start_index,
            sampling_locations,
            attention_weights,
        )
        return torch.ops.freqfusion_d2.ms_deform_attn_forward(
            value,
            value_spatial_shapes,
            value_level_start_index,
            sampling_locations,
            attention_weights,
        )

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        grads = torch.ops.freqfusion_d2.ms_deform_attn_backward(
            grad_output.contiguous(), *ctx.saved_tensors
        )
        grad_value, grad_locations, grad_weights = grads
        return grad_value, None, None, grad_locations, grad_weights


def _has_compiled_op(device: torch.device) -> bool:
    if not has_kernel_for(device):
        return False
    # An extension built before this op existed has no such schema: use the reference then.
    return all(hasattr(torch.ops.freqfusion_d2, name) for name in _OP_NAMES)


def ms_deform_attn(
    value: torch.Tensor,
    value_spatial_shapes: torch.Tensor,
    value_level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    im2col_step: int = 64,
) -> torch.Tensor:
    """Multi-scale deformable attention sampling (the upstream ``MSDeformAttnFunction``).

    Args:
        value: (N, S, M, D) per-head values of all levels, flattened row-major level after
            level; S = sum of H_l * W_l.
        value_spatial_shapes: (L, 2) int64 (H_l, W_l) of each level, on the device of ``value``.
        value_level_start_index: (L,) int64 first row of each level in ``value``.
        sampling_locations: (N, Lq, M, L, P, 2) normalised locations, (x, y) order; (0, 0) is
            the top-left corner of the map and (1, 1) the bottom-right one. Locations outside
            [0, 1] are allowed (zero padding).
        attention_weights: (N, Lq, M, L, P) weights of the samples, used as given.
        im2col_step: accepted for compatibility with upstream's signature; the kernels here
            need no im2col buffer, so it has no effect (any positive int).

    Returns:
        (N, Lq, M * D) tensor with the dtype of ``value``.

    Raises:
        ValueError: for wrong shapes, dtypes, inconsistent level tables (checked for CPU inputs)
            or inputs on different devices.
    """
    if isinstance(im2col_step, bool) or not isinstance(im2col_step, int) or im2col_step < 1:
        raise ValueError(f"ms_deform_attn: im2col_step must be a positive int, got {im2col_step!r}")
    _check_args(
        value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights
    )
    if torch.onnx.is_in_onnx_export():
        # Standard operators only, so that the ONNX file needs no custom runtime op.
        return ms_deform_attn_decomposed(
            value,
            value_spatial_shapes,
            value_level_start_index,
            sampling_locations,
            attention_weights,
        )
    if not _has_compiled_op(value.device):
        return ms_deform_attn_ref(
            value,
            value_spatial_shapes,
            value_level_start_index,
            sampling_locations,
            attention_weights,
        )
    if torch.jit.is_tracing():
        # A traced autograd.Function could not be saved: the registered op itself, for
        # inference only.
        return torch.ops.freqfusion_d2.ms_deform_attn_forward(
            value,
            value_spatial_shapes,
            value_level_start_index,
            sampling_locations.to(value.dtype),
            attention_weights.to(value.dtype),
        )
    return _MSDeformAttnFunction.apply(
        value,
        value_spatial_shapes,
        value_level_start_index,
        sampling_locations.to(value.dtype),
        attention_weights.to(value.dtype),
    )


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module with the upstream parameters and init.

    Parameter names and shapes equal upstream's (``sampling_offsets``, ``attention_weights``,
    ``value_proj``, ``output_proj``), so upstream checkpoints load unchanged.

    Args:
        d_model: channels C of queries and values; must be divisible by ``n_heads``.
        n_levels: number of feature levels L.
        n_heads: number of attention heads M.
        n_points: sampling points P per head and level.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        for name, v in (
            ("d_model", d_model),
            ("n_levels", n_levels),
            ("n_heads", n_heads),
            ("n_points", n_points),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"MSDeformAttn: {name} must be a positive int, got {v!r}")
        if d_model % n_heads != 0:
            raise ValueError(
                f"MSDeformAttn: d_model={d_model} must be divisible by n_heads={n_heads}"
            )
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.im2col_step = 128
        # Output layouts: offsets ((m*L + l)*P + p)*2 + {x, y}; weights (m*L + l)*P + p.
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """The upstream init: head m starts sampling along the direction 2*pi*m/M.

        The bias of point p is (p + 1) times the head's direction scaled so that its larger
        coordinate is 1, in pixels of every level; the attention starts uniform.
        """
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)
        directions = directions / directions.abs().amax(dim=-1, keepdim=True)
        steps = torch.arange(1, self.n_points + 1, dtype=torch.float32)
        bias = directions[:, None, None, :] * steps[None, None, :, None]
        bias = bias.expand(self.n_heads, self.n_levels, self.n_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: torch.Tensor,
        input_padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Attends from each query to a few sampled points around its reference points.

        Args:
            query: (N, Lq, C) queries.
            reference_points: (N, Lq, L, 2) normalised (x, y) points, in which case the learnt
                offsets are in pixels of each level; or (N, Lq, L, 4) boxes (cx, cy, w, h), in
                which case the offsets are relative to half the box size divided by P.
            input_flatten: (N, S, C) values of all levels, flattened level after level.
            input_spatial_shapes: (L, 2) int64 (H_l, W_l).
            input_level_start_index: (L,) int64 first row of each level.
            input_padding_mask: optional (N, S) bool, True where ``input_flatten`` is padding
                (those values are zeroed).

        Returns:
            (N, Lq, C) tensor.
        """
        if query.dim() != 3 or query.shape[-1] != self.d_model:
            raise ValueError(
                f"MSDeformAttn: query must be (N, Lq, {self.d_model}), got {tuple(query.shape)}"
            )
        if input_flatten.dim() != 3 or input_flatten.shape[-1] != self.d_model:
            raise ValueError(
                f"MSDeformAttn: input_flatten must be (N, S, {self.d_model}), got "
                f"{tuple(input_flatten.shape)}"
            )
        n, lq, _ = query.shape
        _, s, _ = input_flatten.shape
        if input_flatten.shape[0] != n:
            raise ValueError(
                f"MSDeformAttn: query and input_flatten batch sizes differ ({n} vs "
                f"{input_flatten.shape[0]})"
            )
        if tuple(input_spatial_shapes.shape) != (self.n_levels, 2):
            raise ValueError(
                f"MSDeformAttn: input_spatial_shapes must be ({self.n_levels}, 2), got "
                f"{tuple(input_spatial_shapes.shape)}"
            )
        if reference_points.dim() != 4 or tuple(reference_points.shape[:3]) != (
            n,
            lq,
            self.n_levels,
        ):
            raise ValueError(
                f"MSDeformAttn: reference_points must be (N, Lq, L, 2 or 4) = ({n}, {lq}, "
                f"{self.n_levels}, 2 or 4), got {tuple(reference_points.shape)}"
            )
        if reference_points.shape[-1] not in (2, 4):
            raise ValueError(
                "MSDeformAttn: the last dimension of reference_points must be 2 or 4, got "
                f"{reference_points.shape[-1]}"
            )
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            if tuple(input_padding_mask.shape) != (n, s):
                raise ValueError(
                    f"MSDeformAttn: input_padding_mask must be (N, S) = ({n}, {s}), got "
                    f"{tuple(input_padding_mask.shape)}"
                )
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        heads, levels, points = self.n_heads, self.n_levels, self.n_points
        value = value.view(n, s, heads, self.d_model // heads)
        offsets = self.sampling_offsets(query).view(n, lq, heads, levels, points, 2)
        weights = self.attention_weights(query).view(n, lq, heads, levels * points)
        weights = F.softmax(weights, dim=-1).view(n, lq, heads, levels, points)
        if reference_points.shape[-1] == 2:
            # Offsets are in pixels of each level: divide by (W_l, H_l), x first.
            normalizer = input_spatial_shapes.flip(-1).to(offsets.dtype)
            locations = (
                reference_points[:, :, None, :, None, :]
                + offsets / normalizer[None, None, None, :, None, :]
            )
        else:
            locations = (
                reference_points[:, :, None, :, None, :2]
                + offsets / points * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        output = ms_deform_attn(
            value,
            input_spatial_shapes,
            input_level_start_index,
            locations,
            weights,
            self.im2col_step,
        )
        return self.output_proj(output)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_levels={self.n_levels}, n_heads={self.n_heads}, "
            f"n_points={self.n_points}"
        )


def _register_fake_kernels() -> None:
    """Shape-only kernels so torch.compile and meta tensors can trace the compiled op."""
    if get_extension() is None or not all(
        hasattr(torch.ops.freqfusion_d2, name) for name in _OP_NAMES
    ):
        return

    @torch.library.register_fake("freqfusion_d2::ms_deform_attn_forward")
    def _(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        n, _, m, d = value.shape
        return value.new_empty((n, sampling_locations.shape[1], m * d))

    @torch.library.register_fake("freqfusion_d2::ms_deform_attn_backward")
    def _(
        grad_output,
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
    ):
        return (
            torch.empty_like(value),
            torch.empty_like(sampling_locations),
            torch.empty_like(attention_weights),
        )


_register_fake_kernels()
