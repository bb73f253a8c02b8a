"""CARAFE and multi-scale deformable attention written with standard tensor operators only.

These are the forms used while a model is exported to ONNX (both ``torch.onnx.export``
exporters): every operator has an ONNX counterpart (Pad, Slice, Mul, Add, Reshape, Gather,
Floor, Where), so the exported graph needs no custom runtime op, and nothing is read back as a
Python number, so the graph keeps the input's spatial sizes symbolic.

They compute the same functions as the compiled kernels (see :mod:`.carafe` and
:mod:`.ms_deform_attn` for the definitions) and are checked against the references in the tests.
Unlike the references they do not call ``F.unfold`` (whose ONNX form needs static sizes) or
read the level table of deformable attention with ``.tolist()``.
"""

import torch
import torch.nn.functional as F

__all__ = ["carafe_decomposed", "ms_deform_attn_decomposed"]


def carafe_decomposed(
    features: torch.Tensor,
    masks: torch.Tensor,
    kernel_size: int,
    group_size: int,
    scale_factor: int,
) -> torch.Tensor:
    """CARAFE as a sum of ``kernel_size**2`` shifted copies of ``features`` times mask planes.

    Tap ``(i, j)`` of every output pixel ``(y, x)`` reads ``features[y // s + i - r,
    x // s + j - r]``; the copy shifted by ``(i - r, j - r)`` is sliced from the zero-padded map
    and broadcast over the ``s x s`` output pixels of each input pixel, so no upsampled copy of
    ``features`` is built. Arguments and result as in :func:`freqfusion_d2.layers.carafe`
    (inputs are not validated here).
    """
    masks = masks.to(features.dtype)
    n, c, h, w = features.shape
    k, g, s = kernel_size, group_size, scale_factor
    r = (k - 1) // 2
    padded = F.pad(features, (r, r, r, r))
    # (N, G*k*k, s*H, s*W) -> (N, G, k*k, H, s, W, s): output pixel (y*s + a, x*s + b).
    masks = masks.reshape(n, g, k * k, h, s, w, s)
    out = features.new_zeros(())
    for i in range(k):
        for j in range(k):
            tap = padded[:, :, i : i + h, j : j + w].reshape(n, g, c // g, h, 1, w, 1)
            out = out + tap * masks[:, :, i * k + j].unsqueeze(2)
    return out.reshape(n, c, h * s, w * s)


def ms_deform_attn_decomposed(
    value: torch.Tensor,
    value_spatial_shapes: torch.Tensor,
    value_level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention as one gather of the four bilinear neighbours.

    Every sample's four neighbours are looked up by their row in the flattened ``value``
    (``level_start + y * W_l + x``), the level sizes being read from the level table as tensors;
    neighbours outside their map get weight zero. Arguments and result as in
    :func:`freqfusion_d2.layers.ms_deform_attn` (inputs are not validated here).
    """
    dtype = value.dtype
    n, s, m, d = value.shape
    _, lq, _, num_levels, p, _ = sampling_locations.shape
    sampling_locations = sampling_locations.to(dtype)
    attention_weights = attention_weights.to(dtype)
    # Level tables broadcast against (N, Lq, M, L, P).
    heights = value_spatial_shapes[:, 0].view(1, 1, 1, num_levels, 1)
    widths = value_spatial_shapes[:, 1].view(1, 1, 1, num_levels, 1)
    starts = value_level_start_index.view(1, 1, 1, num_levels, 1)
    # Pixel-space coordinates with pixel centres at integers (grid_sample, align_corners=False).
    x = sampling_locations[..., 0] * widths.to(dtype) - 0.5
    y = sampling_locations[..., 1] * heights.to(dtype) - 0.5
    x0 = x.floor()
    y0 = y.floor()
    fx = x - x0
    fy = y - y0
    x0 = x0.to(torch.int64)
    y0 = y0.to(torch.int64)
    rows, weights = [], []
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi = x0 + dx
            yi = y0 + dy
            inside = (xi >= 0) & (xi < widths) & (yi >= 0) & (yi < heights)
            rows.append(torch.where(inside, starts + yi * widths + xi, torch.zeros_like(xi)))
            weights.append(wx * wy * inside.to(dtype) * attention_weights)
    # (N, Lq, M, L, P, 4) -> (N, M, Lq, L*P*4): the samples of one (image, head) are contiguous.
    rows = torch.stack(rows, dim=-1).permute(0, 2, 1, 3, 4, 5).reshape(n, m, lq, -1)
    weights = torch.stack(weights, dim=-1).permute(0, 2, 1, 3, 4, 5).reshape(n, m, lq, -1, 1)
    # Rows of the (N*M*S, D) table of every head's values.
    table = value.permute(0, 2, 1, 3).reshape(-1, d)
    offsets = torch.arange(n * m, device=value.device, dtype=torch.int64).view(n, m, 1, 1) * s
    sampled = table.index_select(0, (rows + offsets).reshape(-1))
    sampled = sampled.reshape(n, m, lq, num_levels * p * 4, d)
    out = (sampled * weights).sum(dim=3)  # (N, M, Lq, D)
    return out.permute(0, 2, 1, 3).reshape(n, lq, m * d)
