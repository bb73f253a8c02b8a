"""Sampling grids in pixel units, shared by the adaptive resampler and the adaptive upsampler.

A *position field* of a map of size (H, W) is a (N, 2, H, W) tensor holding, for each sample
of the map, where it sits in a reference frame, in the pixel units of that frame: channel 0 is
x (column), channel 1 is y (row), and the sample (i, j) of an undistorted map sits at (j, i).
Fields in pixel units compose and invert without the normalisation conventions of
``grid_sample``; :func:`to_normalized` converts one for ``grid_sample(..., align_corners=True)``.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "identity_grid",
    "to_normalized",
    "sample_field",
    "invert_position_field",
    "compose_positions",
    "subsample_positions",
]


def identity_grid(
    height: int, width: int, *, dtype=torch.float32, device=None, batch: int = 1
) -> torch.Tensor:
    """The undistorted position field: ``grid[:, 0, i, j] = j`` and ``grid[:, 1, i, j] = i``.

    Args:
        height, width: map size.
        dtype, device: of the result.
        batch: leading size (the field is expanded, not copied).

    Returns:
        (batch, 2, height, width) tensor of exact integers.
    """
    ys = torch.arange(height, dtype=dtype, device=device)
    xs = torch.arange(width, dtype=dtype, device=device)
    grid = torch.stack(
        [xs.view(1, width).expand(height, width), ys.view(height, 1).expand(height, width)]
    )
    return grid.unsqueeze(0).expand(batch, 2, height, width)


def to_normalized(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel positions (N, 2, ...) of a (height, width) map to the (N, ..., 2) grid that
    ``grid_sample(align_corners=True)`` reads (pixel 0 -> -1, pixel size-1 -> 1; a size of 1
    maps to 0)."""
    scale = points.new_tensor([max(width - 1, 1), max(height - 1, 1)]).view(
        1, 2, *([1] * (points.dim() - 2))
    )
    normalized = points * (2.0 / scale) - 1.0
    if width == 1:
        normalized = torch.cat([torch.zeros_like(normalized[:, :1]), normalized[:, 1:]], dim=1)
    if height == 1:
        normalized = torch.cat([normalized[:, :1], torch.zeros_like(normalized[:, 1:])], dim=1)
    return normalized.movedim(1, -1)


def sample_field(field: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear value of a map at pixel positions, clamped to the map's border.

    Args:
        field: (N, C, H, W) map.
        points: (N, 2, h, w) positions in the pixel units of ``field``.

    Returns:
        (N, C, h, w).
    """
    height, width = field.shape[-2:]
    grid = to_normalized(points.to(field.dtype), height, width)
    return F.grid_sample(field, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _jacobian(displacement: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """Lattice derivatives (d/dx, d/dy) of a (N, 2, H, W) displacement field, central inside and
    one-sided at the border (zero along an axis of size 1)."""

    def diff(t: torch.Tensor, dim: int) -> torch.Tensor:
        size = t.shape[dim]
        if size == 1:
            return torch.zeros_like(t)
        return torch.gradient(t, dim=dim, edge_order=1)[0]

    return diff(displacement, 3), diff(displacement, 2)


def invert_position_field(
    positions: torch.Tensor,
    targets: torch.Tensor,
    *,
    iterations: int = 5,
    displacement: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Where, on the lattice of a map whose samples sit at ``positions``, each target point lies.

    Solves ``positions(u) = t`` for ``u`` by Newton's method on the bilinear interpolation of the
    field, with the lattice Jacobian of the field. Sampler grids are monotonic along each axis
    (positive Jacobian), so the iteration is well defined. Works on the displacement
    ``positions - identity`` so an undistorted field returns the targets exactly.

    Args:
        positions: (N, 2, h, w) position field of the map, in the reference frame's pixels.
        targets: (N, 2, H, W) points of the reference frame to locate, same units.
        iterations: Newton steps.
        displacement: ``positions - identity_grid(h, w)`` if already known (saves rounding).

    Returns:
        (N, 2, H, W) lattice coordinates ``u`` of the map (pixel units of the map), clamped to
        the map; differentiable with respect to ``positions`` and ``targets``.
    """
    n, _, h, w = positions.shape
    if displacement is None:
        displacement = positions - identity_grid(
            h, w, dtype=positions.dtype, device=positions.device
        )
    ddx, ddy = _jacobian(displacement)
    # Fields sampled together: displacement (2) and its Jacobian columns (2 + 2).
    stacked = torch.cat([displacement, ddx, ddy], dim=1)
    upper = targets.new_tensor([w - 1, h - 1]).view(1, 2, 1, 1)
    u = targets
    for _ in range(iterations):
        s = sample_field(stacked, u)
        d, jx, jy = s[:, 0:2], s[:, 2:4], s[:, 4:6]
        # J = I + [d(dx)/dx, d(dx)/dy; d(dy)/dx, d(dy)/dy]; residual r = t - (u + d(u)).
        a, b = 1.0 + jx[:, 0], jy[:, 0]
        c, e = jx[:, 1], 1.0 + jy[:, 1]
        r = targets - u - d
        det = a * e - b * c
        det = torch.where(det.abs() < 1e-6, torch.full_like(det, 1e-6), det)
        step_x = (e * r[:, 0] - b * r[:, 1]) / det
        step_y = (a * r[:, 1] - c * r[:, 0]) / det
        u = u + torch.stack([step_x, step_y], dim=1)
        u = torch.minimum(torch.clamp(u, min=0.0), upper)
    return u


def compose_positions(positions: Optional[torch.Tensor], grid: torch.Tensor) -> torch.Tensor:
    """Position field of a map resampled at ``grid`` from a map whose field is ``positions``.

    Args:
        positions: (N, 2, h, w) field of the sampled map, or None (uniform).
        grid: (N, 2, H, W) sampling positions, in pixels of the sampled map.

    Returns:
        (N, 2, H, W) where each new sample sits in the reference frame.
    """
    if positions is None:
        return grid
    # Interpolate the displacement, not the positions: an undistorted field stays exact.
    h, w = positions.shape[-2:]
    positions = positions.to(grid.dtype)
    displacement = positions - identity_grid(h, w, dtype=grid.dtype, device=grid.device)
    return grid + sample_field(displacement, grid)


def subsample_positions(positions: torch.Tensor, stride: int, mode: str = "conv") -> torch.Tensor:
    """Position field after a strided layer, in the pixels of the output lattice.

    Args:
        positions: (N, 2, H, W) field of the layer's input.
        stride: the layer's stride (1 returns ``positions``).
        mode: ``"conv"``: output pixel q is centred on input pixel ``stride * q`` (a convolution
            with ``padding = kernel // 2``; output size ``ceil(H / stride)``). ``"merge"``:
            output pixel q covers the ``stride x stride`` input block starting at
            ``stride * q`` (Swin's patch merging; the input is padded at the end to a multiple
            of ``stride``).

    Returns:
        (N, 2, ceil(H / stride), ceil(W / stride)); an undistorted field stays undistorted.
    """
    if stride == 1:
        return positions
    if mode == "conv":
        return positions[..., ::stride, ::stride] / stride
    if mode != "merge":
        raise ValueError(f"subsample_positions: mode must be 'conv' or 'merge', got {mode!r}")
    n, _, h, w = positions.shape
    pad_h, pad_w = (-h) % stride, (-w) % stride
    ident = identity_grid(h + pad_h, w + pad_w, dtype=positions.dtype, device=positions.device)
    disp = positions - ident[..., :h, :w]
    disp = F.pad(disp, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else disp
    block = F.avg_pool2d(disp + ident, stride)
    return (block - (stride - 1) / 2.0) / stride
