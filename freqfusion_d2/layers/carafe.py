"""CARAFE: content-aware reassembly of features (Wang et al., ICCV 2019), as used by FreqFusion.

``carafe`` runs the compiled kernels of ``freqfusion_d2._C`` (CPU, and CUDA when built) and falls
back to ``carafe_ref`` when they are missing. Both compute exactly mmcv's CARAFE:

    out[n, c, y, x] = sum_{i, j} masks[n, g*k*k + i*k + j, y, x]
                                 * features[n, c, y // s + i - r, x // s + j - r]

with ``g = c // (C // G)`` (contiguous channel blocks per mask group), ``r = (k - 1) // 2`` and
zero contribution from taps outside the feature map (masks are not renormalised at borders).

While a model is exported to ONNX, :func:`carafe` computes the same function with standard
operators (:func:`freqfusion_d2.layers.decomposed.carafe_decomposed`).

Dtype rule: the output has the dtype of ``features``; ``masks`` of another floating dtype are cast
to it first (their gradient comes back in their own dtype). Half and bfloat16 are accumulated in
float32 by the compiled kernels.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ._ext import get_extension, has_kernel_for
from .decomposed import carafe_decomposed

__all__ = ["carafe", "carafe_ref", "CARAFE"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_args(features, masks, kernel_size, group_size, scale_factor):
    for name, t in (("features", features), ("masks", masks)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"carafe: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"carafe: {name} must be 4-D (N, C, H, W), got shape {tuple(t.shape)}")
        if t.dtype not in _FLOAT_DTYPES:
            raise ValueError(
                f"carafe: {name} must be float16, bfloat16, float32 or float64, got {t.dtype}"
            )
    for name, v in (
        ("kernel_size", kernel_size),
        ("group_size", group_size),
        ("scale_factor", scale_factor),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"carafe: {name} must be a positive int, got {v!r}")
    if kernel_size % 2 != 1:
        raise ValueError(f"carafe: kernel_size must be odd, got {kernel_size}")
    n, c, h, w = features.shape
    if c % group_size != 0:
        raise ValueError(
            f"carafe: group_size={group_size} must divide the {c} channels of features"
        )
    expected = (n, group_size * kernel_size * kernel_size, h * scale_factor, w * scale_factor)
    if tuple(masks.shape) != expected:
        raise ValueError(
            f"carafe: masks must have shape (N, group_size*kernel_size**2, scale_factor*H, "
            f"scale_factor*W) = {expected} for features {tuple(features.shape)}, got "
            f"{tuple(masks.shape)}"
        )
    if features.device != masks.device:
        raise ValueError(
            f"carafe: features and masks must be on the same device, got {features.device} "
            f"and {masks.device}"
        )


def carafe_ref(
    features: torch.Tensor,
    masks: torch.Tensor,
    kernel_size: int,
    group_size: int,
    scale_factor: int,
) -> torch.Tensor:
    """Pure-PyTorch CARAFE with the same semantics and arguments as :func:`carafe`.

    It materialises a (N, C*k*k, s*H, s*W) tensor, so it is only meant as a fallback and as the
    oracle of the tests.
    """
    _check_args(features, masks, kernel_size, group_size, scale_factor)
    masks = masks.to(features.dtype)
    n, c, h, w = features.shape
    k, g, s = kernel_size, group_size, scale_factor
    if n == 0 or c == 0 or h == 0 or w == 0:
        # unfold rejects empty inputs; keep the result connected to both inputs for autograd.
        zero = (features.sum() + masks.sum()) * 0
        return features.new_zeros((n, c, h * s, w * s)) + zero
    cols = F.unfold(features, k, padding=(k - 1) // 2).view(n, g, c // g, k * k, h, w)
    cols = cols.repeat_interleave(s, dim=4).repeat_interleave(s, dim=5)
    out = (cols * masks.view(n, g, 1, k * k, h * s, w * s)).sum(dim=3)
    return out.view(n, c, h * s, w * s)


class _CARAFEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, masks, kernel_size, group_size, scale_factor):
        features = features.contiguous()
        masks = masks.contiguous()
        ctx.save_for_backward(features, masks)
        ctx.params = (kernel_size, group_size, scale_factor)
        return torch.ops.freqfusion_d2.carafe_forward(
            features, masks, kernel_size, group_size, scale_factor
        )

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        features, masks = ctx.saved_tensors
        grad_features, grad_masks = torch.ops.freqfusion_d2.carafe_backward(
            grad_output.contiguous(), features, masks, *ctx.params
        )
        return grad_features, grad_masks, None, None, None


def carafe(
    features: torch.Tensor,
    masks: torch.Tensor,
    kernel_size: int,
    group_size: int = 1,
    scale_factor: int = 1,
) -> torch.Tensor:
    """Reassembles ``features`` with the per-pixel kernels ``masks`` (mmcv semantics).

    Args:
        features: (N, C, H, W) float16, bfloat16, float32 or float64 tensor.
        masks: (N, group_size * kernel_size**2, scale_factor * H, scale_factor * W) kernels,
            used as given (normalising them is the caller's job). Channel ``g*k*k + i*k + j``
            weighs the tap at offset ``(i - r, j - r)`` for the channel block ``g``.
        kernel_size: odd kernel size k.
        group_size: number of mask groups G; must divide C.
        scale_factor: integer upsampling factor s (1 for plain filtering).

    Returns:
        (N, C, s*H, s*W) tensor with the dtype of ``features``.

    Raises:
        ValueError: for wrong shapes, an even kernel, a group count that does not divide C,
            non-floating dtypes or inputs on different devices.
    """
    if not torch.jit.is_scripting():
        _check_args(features, masks, kernel_size, group_size, scale_factor)
        if torch.onnx.is_in_onnx_export():
            # Standard operators only, so that the ONNX file needs no custom runtime op.
            return carafe_decomposed(features, masks, kernel_size, group_size, scale_factor)
        if not has_kernel_for(features.device):
            return carafe_ref(features, masks, kernel_size, group_size, scale_factor)
        if not torch.jit.is_tracing():
            masks = masks.to(features.dtype)
            return _CARAFEFunction.apply(features, masks, kernel_size, group_size, scale_factor)
    # TorchScript, scripted or traced (a traced autograd.Function could not be saved): the
    # registered op itself, for inference only; it checks its own inputs.
    return torch.ops.freqfusion_d2.carafe_forward(
        features, masks.to(features.dtype), kernel_size, group_size, scale_factor
    )


class CARAFE(nn.Module):
    """Module form of :func:`carafe` with fixed kernel size, group count and scale."""

    def __init__(self, kernel_size: int, group_size: int = 1, scale_factor: int = 1):
        super().__init__()
        self.kernel_size = kernel_size
        self.group_size = group_size
        self.scale_factor = scale_factor

    def forward(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return carafe(features, masks, self.kernel_size, self.group_size, self.scale_factor)

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, group_size={self.group_size}, "
            f"scale_factor={self.scale_factor}"
        )


def _register_fake_kernels() -> None:
    """Shape-only kernels so torch.compile and meta tensors can trace the compiled op."""
    if get_extension() is None:
        return

    @torch.library.register_fake("freqfusion_d2::carafe_forward")
    def _(features, masks, kernel_size, group_size, scale_factor):
        n, c, h, w = features.shape
        return features.new_empty((n, c, h * scale_factor, w * scale_factor))

    @torch.library.register_fake("freqfusion_d2::carafe_backward")
    def _(grad_output, features, masks, kernel_size, group_size, scale_factor):
        return torch.empty_like(features), torch.empty_like(masks)


_register_fake_kernels()
