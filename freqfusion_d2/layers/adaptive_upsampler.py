"""Multi-scale adaptive upsampling (MSAU) of Spatial Frequency Modulation (Chen et al.,
TPAMI 2025).

MSAU reverses the adaptive resampling: the samples of a map taken on a non-uniform grid are put
back where they were taken, on a uniform lattice of any size, so the detail held by densely
sampled regions comes back at full resolution ("demodulation"). The paper describes it as
non-uniform upsampling with interaction between densely and sparsely sampled regions at several
scales. Its formulation here:

* base: bilinear interpolation at the preimage of each target point (the inverse of the
  position field, by Newton's method); for an undistorted map this is plain bilinear
  upsampling;
* at each scale ``d`` (a dilation), a Gaussian-weighted mean of the ``k x k`` samples around the
  preimage spaced ``d`` apart, the weight of each sample given by the distance between where it
  was taken and the target point, with a learnable width per scale; the Gaussian-neighbour form
  follows the authors' pre-release ``NonUniformInterpolation`` (github.com/Linwei-Chen/
  Seg-Aliasing, commit 3058960, ``mmseg_custom/models/backbones/interp2d.py``);
* ``y = base + sum_d g_d * (scale_d - base)`` with gates ``g_d`` starting at zero, so a new
  upsampler is bilinear upsampling.

Everything is batched tensor code (no triangulation, no loop over the batch); gradients reach the
values, the positions, the widths and the gates.
"""

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .carafe import carafe
from .sampling_grid import identity_grid, invert_position_field, sample_field

__all__ = ["MultiScaleAdaptiveUpsampler", "gather_weighted_sum", "lattice_targets"]


class _GatherWeightedSum(torch.autograd.Function):
    """``out[n, c, m] = sum_t weight[n, t, m] * x[n, c, index[n, t, m]]``, one tap at a time so
    neither pass holds the (N, C, T, M) gathered tensor."""

    @staticmethod
    def forward(ctx, x, index, weight):
        n, c, _ = x.shape
        taps, m = index.shape[1:]
        out = x.new_zeros(n, c, m)
        for t in range(taps):
            idx = index[:, t : t + 1].expand(n, c, m)
            out.addcmul_(weight[:, t : t + 1].to(x.dtype), x.gather(2, idx))
        ctx.save_for_backward(x, index, weight)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, index, weight = ctx.saved_tensors
        n, c, _ = x.shape
        taps, m = index.shape[1:]
        grad_out = grad_out.contiguous()
        grad_x = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        grad_w = torch.empty_like(weight) if ctx.needs_input_grad[2] else None
        for t in range(taps):
            idx = index[:, t : t + 1].expand(n, c, m)
            if grad_x is not None:
                grad_x.scatter_add_(2, idx, grad_out * weight[:, t : t + 1].to(x.dtype))
            if grad_w is not None:
                grad_w[:, t] = (grad_out * x.gather(2, idx)).sum(1).to(weight.dtype)
        return grad_x, None, grad_w


def gather_weighted_sum(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor):
    """Weighted sum of gathered samples.

    Args:
        x: (N, C, L) values.
        index: (N, T, M) int64 indices into L.
        weight: (N, T, M) weights.

    Returns:
        (N, C, M) ``sum_t weight[:, t] * x[:, :, index[:, t]]``.
    """
    return _GatherWeightedSum.apply(x, index, weight)


def lattice_targets(
    in_size: Sequence[int], out_size: Sequence[int], *, dtype=torch.float32, device=None
) -> torch.Tensor:
    """(1, 2, H, W) positions of an (H, W) output lattice in the pixels of an (h, w) map, with the
    half-pixel convention of ``F.interpolate(..., align_corners=False)`` (negative positions are
    kept; the samplers clamp them, as interpolate does)."""
    (h, w), (height, width) = in_size, out_size
    xs = (torch.arange(width, dtype=torch.float64) + 0.5) * (w / width) - 0.5
    ys = (torch.arange(height, dtype=torch.float64) + 0.5) * (h / height) - 0.5
    grid = torch.stack(
        [xs.view(1, width).expand(height, width), ys.view(height, 1).expand(height, width)]
    )
    return grid.to(dtype=dtype, device=device).unsqueeze(0)


class MultiScaleAdaptiveUpsampler(nn.Module):
    """Upsampling of a (possibly non-uniformly sampled) map onto a uniform lattice.

    ``forward(x, size, positions=None)`` and ``point_sample(x, point_coords, positions=None)``
    evaluate the same function, on a lattice or at points. ``positions`` is the (N, 2, h, w)
    position field of ``x`` (where each sample of ``x`` was taken, in pixels of ``x``'s uniform
    frame; see :mod:`freqfusion_d2.layers.sampling_grid`); ``None`` means uniform samples.

    Args:
        dilations: one scale per dilation of the ``k x k`` neighbourhood.
        kernel_size: odd ``k``.
        init_fwhm: initial Gaussian width of each scale, in pixels of ``x`` (default: the
            dilation).
        inverse_iterations: Newton steps of the position-field inversion.
    """

    def __init__(
        self,
        *,
        dilations: Sequence[int] = (1, 2, 4),
        kernel_size: int = 3,
        init_fwhm: Optional[Sequence[float]] = None,
        inverse_iterations: int = 5,
    ):
        super().__init__()
        dilations = tuple(int(d) for d in dilations)
        if any(d < 1 for d in dilations):
            raise ValueError(
                f"MultiScaleAdaptiveUpsampler: dilations must be integers >= 1, got {dilations}"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"MultiScaleAdaptiveUpsampler: kernel_size must be odd and >= 1, got {kernel_size}"
            )
        init_fwhm = tuple(float(d) for d in (init_fwhm if init_fwhm is not None else dilations))
        if len(init_fwhm) != len(dilations) or any(f <= 0 for f in init_fwhm):
            raise ValueError(
                "MultiScaleAdaptiveUpsampler: init_fwhm must hold one positive width per "
                f"dilation ({len(dilations)}), got {init_fwhm}"
            )
        if inverse_iterations < 0:
            raise ValueError(
                "MultiScaleAdaptiveUpsampler: inverse_iterations must be >= 0, got "
                f"{inverse_iterations}"
            )
        self.dilations = dilations
        self.kernel_size = int(kernel_size)
        self.inverse_iterations = int(inverse_iterations)
        if dilations:
            self.log_fwhm = nn.Parameter(torch.tensor([math.log(f) for f in init_fwhm]))
            self.gates = nn.Parameter(torch.zeros(len(dilations)))
        else:  # the base term only: a parameter-free demodulator
            self.log_fwhm = self.gates = None
        r = self.kernel_size // 2
        offsets = torch.stack(
            torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="xy")
        ).view(2, -1)
        self.register_buffer("_offsets", offsets, persistent=False)  # (2, k*k) as (dx, dy)

    def _check(self, x: torch.Tensor, positions: Optional[torch.Tensor]):
        if x.dim() != 4:
            raise ValueError(
                f"MultiScaleAdaptiveUpsampler: x must be (N, C, h, w), got {tuple(x.shape)}"
            )
        if positions is not None:
            expected = (x.shape[0], 2, *x.shape[-2:])
            if tuple(positions.shape) != expected:
                raise ValueError(
                    f"MultiScaleAdaptiveUpsampler: positions must be {expected} (the position "
                    f"field of x), got {tuple(positions.shape)}"
                )

    def sample(
        self, x: torch.Tensor, targets: torch.Tensor, positions: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Values at target points.

        Args:
            x: (N, C, h, w) map.
            targets: (N or 1, 2, H, W) points in pixels of ``x``'s uniform frame.
            positions: (N, 2, h, w) position field of ``x``, or None.

        Returns:
            (N, C, H, W).
        """
        self._check(x, positions)
        n, c, h, w = x.shape
        targets = targets.to(
            dtype=torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        )
        targets = targets.expand(n, 2, *targets.shape[-2:])
        upper = targets.new_tensor([w - 1, h - 1]).view(1, 2, 1, 1)
        if positions is None:
            u = torch.minimum(torch.clamp(targets, min=0.0), upper)
        else:
            positions = positions.to(targets.dtype)
            u = invert_position_field(positions, targets, iterations=self.inverse_iterations)
        base = sample_field(x, u.to(x.dtype))
        return self._mix(x, base, u, targets, positions)

    def _mix(self, x, base, u, targets, positions):
        """``base + sum_d g_d * (scale_d - base)``. Neighbours past the border read the border
        sample (replicate padding) but keep their own position, one pixel further out per
        pixel, so that the lattice fast path (a convolution of the padded map) is the same
        function."""
        if not self.dilations:
            return base
        n, c, h, w = x.shape
        out_h, out_w = targets.shape[-2:]
        anchor = torch.round(u).detach().long()
        offsets = self._offsets.to(anchor.device).view(1, 2, 1, -1, 1)
        upper = torch.tensor([w - 1, h - 1], device=anchor.device).view(1, 2, 1, 1, 1)
        flat_t = targets.reshape(n, 2, 1, 1, -1)
        fwhm = self.log_fwhm.exp().to(targets.dtype)
        indices, weights = [], []
        for s, d in enumerate(self.dilations):
            virtual = anchor.reshape(n, 2, 1, 1, -1) + offsets * d  # (N, 2, 1, k*k, M)
            nb = torch.minimum(torch.clamp(virtual, min=0), upper)
            index = (nb[:, 1] * w + nb[:, 0]).reshape(n, -1)  # (N, k*k*M)
            where = virtual.to(targets.dtype)
            if positions is not None:
                sampled = positions.reshape(n, 2, h * w).gather(
                    2, index.unsqueeze(1).expand(n, 2, -1)
                )
                where = where + (sampled.view_as(where) - nb.to(targets.dtype))
            dist2 = ((where - flat_t) ** 2).sum(1)  # (N, 1, k*k, M)
            logits = -4.0 * math.log(2.0) * dist2 / (fwhm[s] * fwhm[s])
            weights.append(logits.softmax(dim=2)[:, 0] * self.gates[s].to(targets.dtype))
            indices.append(index.view(n, -1, out_h * out_w))
        index = torch.cat(indices, dim=1)
        weight = torch.cat(weights, dim=1)
        mixed = gather_weighted_sum(x.reshape(n, c, h * w), index, weight)
        keep = 1.0 - self.gates.sum().to(base.dtype)
        return base * keep + mixed.view(n, c, out_h, out_w)

    def forward(
        self,
        x: torch.Tensor,
        size: Optional[Tuple[int, int]] = None,
        *,
        scale_factor: Optional[float] = None,
        positions: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Upsamples ``x`` to ``size`` (or by ``scale_factor``).

        Without ``positions`` the base term is ``F.interpolate(x, size, mode="bilinear",
        align_corners=False)``, so a new upsampler returns that (to float rounding: for an
        integer scale the whole function is one CARAFE pass, its bilinear weights included).

        Args:
            x: (N, C, h, w) map.
            size: output (H, W).
            scale_factor: output size ``floor(h * scale_factor), floor(w * scale_factor)``.
            positions: (N, 2, h, w) position field of ``x``, or None for uniform samples.

        Returns:
            (N, C, H, W).
        """
        self._check(x, positions)
        if (size is None) == (scale_factor is None):
            raise ValueError("MultiScaleAdaptiveUpsampler: give exactly one of size, scale_factor")
        h, w = x.shape[-2:]
        if size is None:
            size = (int(math.floor(h * scale_factor)), int(math.floor(w * scale_factor)))
        size = (int(size[0]), int(size[1]))
        dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        targets = lattice_targets((h, w), size, dtype=dtype, device=x.device)
        if positions is not None:
            return self.sample(x, targets, positions)
        if not self.dilations:
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if size[0] % h == 0 and size[0] // h == size[1] / w:
            return self._lattice_upsample(x, size[0] // h)
        base = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        targets = targets.expand(x.shape[0], 2, *size)
        upper = targets.new_tensor([w - 1, h - 1]).view(1, 2, 1, 1)
        u = torch.minimum(torch.clamp(targets, min=0.0), upper)
        return self._mix(x, base, u, targets, None)

    def _lattice_kernels(self, scale: int, dtype, device) -> torch.Tensor:
        """(scale^2, 1, 2R+1, 2R+1) filters, one per output phase, whose responses on the
        replicate-padded map are ``(1 - sum_d g_d) * bilinear + sum_d g_d * scale_d`` on an
        upsampling lattice of integer ``scale`` without positions (every output pixel of a
        phase has the same neighbourhood geometry around the input pixel it falls in;
        replicate padding gives bilinear's border clamping)."""
        r = self.kernel_size // 2
        reach = max(max(self.dilations) * r, 1)
        side = 2 * reach + 1
        # Offset of each output phase from its input pixel (F.interpolate's half-pixel rule).
        delta = (torch.arange(scale, dtype=dtype, device=device) + 0.5) / scale - 0.5
        dy, dx = (t.reshape(-1) for t in torch.meshgrid(delta, delta, indexing="ij"))
        phases = scale * scale
        kernels = torch.zeros(phases, side * side, dtype=dtype, device=device)

        def put(kernels, oy, ox, values):
            # values (P, T) at integer offsets (oy, ox) (P, T) from the centre.
            index = ((oy + reach) * side + (ox + reach)).long()
            return kernels.scatter_add(1, index, values)

        # Bilinear taps: floor(delta) and floor(delta) + 1 on each axis.
        fy, fx = torch.floor(dy), torch.floor(dx)
        wy, wx = dy - fy, dx - fx
        keep = 1.0 - self.gates.sum().to(dtype)
        for ty, ay in ((fy, 1 - wy), (fy + 1, wy)):
            for tx, ax in ((fx, 1 - wx), (fx + 1, wx)):
                kernels = put(kernels, ty[:, None], tx[:, None], (keep * ay * ax)[:, None])
        offsets = self._offsets.to(device=device, dtype=dtype)  # (2, k*k)
        fwhm = self.log_fwhm.exp().to(dtype)
        for s, d in enumerate(self.dilations):
            ox, oy = offsets[0] * d, offsets[1] * d
            dist2 = (ox[None] - dx[:, None]) ** 2 + (oy[None] - dy[:, None]) ** 2  # (P, k*k)
            weights = (-4.0 * math.log(2.0) * dist2 / (fwhm[s] * fwhm[s])).softmax(dim=1)
            kernels = put(
                kernels,
                oy[None].expand(phases, -1),
                ox[None].expand(phases, -1),
                weights * self.gates[s].to(dtype),
            )
        return kernels.view(phases, 1, side, side)

    def _lattice_upsample(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        """The whole upsampler on an integer-``scale`` lattice without positions: the phase
        filters applied by CARAFE (the same k x k window around the input pixel each output
        pixel falls in), on the replicate-padded map, so the output is written once."""
        n, c, h, w = x.shape
        dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        kernels = self._lattice_kernels(scale, dtype, x.device).to(x.dtype)
        side = kernels.shape[-1]
        reach = side // 2
        padded = F.pad(x, [reach] * 4, mode="replicate")
        hp, wp = h + 2 * reach, w + 2 * reach
        # masks[t, scale * qy + py, scale * qx + px] = filter of phase (py, px) at tap t.
        masks = kernels.view(scale, scale, side * side).permute(2, 0, 1).repeat(1, hp, wp)
        masks = masks.unsqueeze(0).expand(n, -1, -1, -1).contiguous()
        out = carafe(padded, masks, side, 1, scale)
        lo = scale * reach
        return out[..., lo : lo + scale * h, lo : lo + scale * w]

    def point_sample(
        self,
        x: torch.Tensor,
        point_coords: torch.Tensor,
        positions: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Values at points given like detectron2's ``point_sample``.

        Args:
            x: (N, C, h, w) map.
            point_coords: (N, P, 2) points (x, y) in [0, 1] x [0, 1] of the image extent.
            positions: (N, 2, h, w) position field of ``x``, or None.

        Returns:
            (N, C, P).
        """
        h, w = x.shape[-2:]
        scale = point_coords.new_tensor([w, h])
        targets = (point_coords * scale - 0.5).permute(0, 2, 1).unsqueeze(-1)  # (N, 2, P, 1)
        return self.sample(x, targets, positions).squeeze(-1)

    def demodulate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``x`` brought back to its uniform frame at its own size (targets = the lattice)."""
        n, _, h, w = x.shape
        targets = identity_grid(h, w, dtype=positions.dtype, device=x.device)
        return self.sample(x, targets, positions)

    def extra_repr(self) -> str:
        return (
            f"dilations={self.dilations}, kernel_size={self.kernel_size}, "
            f"inverse_iterations={self.inverse_iterations}"
        )
