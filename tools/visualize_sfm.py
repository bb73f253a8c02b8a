"""Picture of adaptive resampling (ARS): an image, its sampling grid, and the spectra before and
after resampling.

The saliency that a trained ARS generator would predict is stood in for by the local high-pass
energy of the image, normalised like the generator's output (``h*w*softmax``); the grid is then
computed by :class:`freqfusion_d2.layers.AdaptiveResampler` exactly as in a model. The spectra
are log power spectra with the square ``|u|, |v| <= 0.25`` cycles/px that a stride-2
subsampling keeps; the titles give the share of power outside it.

Usage::

    python tools/visualize_sfm.py [--image photo.png] [--size 192] [--out docs/images/sfm_ars.png]

Needs matplotlib. A bad input is told in one line (--debug or FREQFUSION_DEBUG=1: traceback).
"""

import argparse
import io
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

from freqfusion_d2.analysis import aliasing_score
from freqfusion_d2.layers import AdaptiveResampler
from freqfusion_d2.layers.sampling_grid import to_normalized
from freqfusion_d2.utils.cli import (
    InputError,
    add_debug_flag,
    check_output_dir,
    read_image,
    run_cli,
)

NYQUIST = 0.25


def synthetic_image(size: int) -> torch.Tensor:
    """(1, 1, size, size) in [0, 1]: a smooth shading, a disc, and a patch of fine stripes
    (0.35 cycles/px, above the stride-2 limit)."""
    ys = torch.arange(size, dtype=torch.float64).view(size, 1) / size
    xs = torch.arange(size, dtype=torch.float64).view(1, size) / size
    img = 0.35 + 0.25 * xs + 0.15 * torch.cos(2 * math.pi * ys)
    disc = ((xs - 0.3) ** 2 + (ys - 0.7) ** 2 < 0.02).double()
    img = img * (1 - disc) + 0.9 * disc
    patch = ((xs - 0.65).abs() < 0.17) & ((ys - 0.33).abs() < 0.17)
    stripes = 0.5 + 0.5 * torch.cos(2 * math.pi * 0.35 * size * (0.8 * xs + 0.6 * ys))
    img = torch.where(patch, 0.2 + 0.6 * stripes, img)
    return img.float().view(1, 1, size, size)


def load_image(path: str, size: int) -> torch.Tensor:
    """A grey-level image resized to ``size`` x ``size``, in [0, 1]."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L").resize((size, size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).view(1, 1, size, size)


def high_frequency_saliency(img: torch.Tensor, stride: int, sharpness: float) -> torch.Tensor:
    """(1, 1, h, w) saliency of mean 1 at ``1/stride``: softmax of the normalised local energy of
    ``img`` minus its 5x5 mean."""
    high = img - F.avg_pool2d(img, 5, 1, 2, count_include_pad=False)
    energy = F.avg_pool2d(high * high, 2 * stride + 1, stride, stride, count_include_pad=False)
    logits = sharpness * (energy - energy.mean()) / (energy.std() + 1e-12)
    h, w = logits.shape[-2:]
    return (logits.view(1, -1).softmax(dim=1) * (h * w)).view(1, 1, h, w)


def log_spectrum(img: torch.Tensor):
    """Centred log power spectrum (numpy) and the aliasing score before a stride-2 step (the
    share of power outside ``|u|, |v| <= 0.25``, mean removed)."""
    x = img[0, 0].double()
    power = torch.fft.fft2(x - x.mean()).abs().square()
    share = float(aliasing_score(img.double(), cutoff=NYQUIST, remove_dc=True)[0])
    return torch.fft.fftshift(torch.log1p(power)).numpy(), share


def render(img: torch.Tensor, grid: torch.Tensor, resampled: torch.Tensor, out: str, every: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    size = img.shape[-1]
    before, share_before = log_spectrum(img)
    after, share_after = log_spectrum(resampled)
    fig, axes = plt.subplots(2, 2, figsize=(10, 10))
    ax = axes[0, 0]
    ax.imshow(img[0, 0], cmap="gray", vmin=0, vmax=1)
    gx, gy = grid[0, 0].numpy(), grid[0, 1].numpy()
    for i in range(0, size, every):
        ax.plot(gx[i], gy[i], color="tab:orange", lw=0.6)
        ax.plot(gx[:, i], gy[:, i], color="tab:orange", lw=0.6)
    ax.set_title(f"image and ARS sampling grid (every {every}th line)")
    axes[0, 1].imshow(resampled[0, 0], cmap="gray", vmin=0, vmax=1)
    axes[0, 1].set_title("ARS output (same size; dense regions magnified)")
    vmax = max(before.max(), after.max())
    for ax, spec, share, name in (
        (axes[1, 0], before, share_before, "before"),
        (axes[1, 1], after, share_after, "after"),
    ):
        ax.imshow(spec, cmap="magma", vmin=0, vmax=vmax, extent=(-0.5, 0.5, 0.5, -0.5))
        ax.add_patch(
            Rectangle((-NYQUIST, -NYQUIST), 2 * NYQUIST, 2 * NYQUIST, fill=False, color="cyan")
        )
        ax.set_title(f"log power spectrum {name}: {100 * share:.1f}% above 0.25 cyc/px")
        ax.set_xlabel("cycles / px")
    for ax in axes[0]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=80, format="png")
    plt.close(fig)
    # A 256-colour palette keeps the file small enough for a repository.
    from PIL import Image

    buffer.seek(0)
    with Image.open(buffer) as im:
        im.convert("RGB").quantize(256).save(out, optimize=True)
    return share_before, share_after


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default="", help="grey-level picture (default: synthetic)")
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--stride", type=int, default=2, help="ARS saliency stride")
    parser.add_argument("--kernel", type=int, default=63, help="ARS Gaussian window (odd)")
    parser.add_argument("--fwhm", type=float, default=32.0, help="ARS Gaussian FWHM")
    parser.add_argument("--sharpness", type=float, default=2.0, help="saliency contrast")
    parser.add_argument("--grid-every", type=int, default=6)
    parser.add_argument("--out", default="docs/images/sfm_ars.png")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.kernel < 3 or args.kernel % 2 == 0:
        parser.error(f"--kernel must be odd and >= 3, got {args.kernel}")
    if args.size < 8:
        raise InputError("--size", str(args.size), "at least 8 pixels")
    if args.image:
        read_image("--image", args.image)  # a missing, truncated or non-image file
    check_output_dir("--out (its folder)", os.path.dirname(os.path.abspath(args.out)))
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise InputError("matplotlib", "is not installed", "`pip install matplotlib`") from e
    img = load_image(args.image, args.size) if args.image else synthetic_image(args.size)
    ars = AdaptiveResampler(
        1, mode="conv", stride=args.stride, radius=args.kernel // 2, fwhm=args.fwhm
    )
    saliency = high_frequency_saliency(img, args.stride, args.sharpness)
    with torch.no_grad():
        grid = ars.grid_from_saliency(saliency, img.shape[-2:])
        resampled = F.grid_sample(
            img, to_normalized(grid, *img.shape[-2:]), padding_mode="border", align_corners=True
        )
    shares = render(img, grid, resampled, args.out, args.grid_every)
    print(
        f"wrote {args.out}; power above {NYQUIST} cyc/px: {100 * shares[0]:.1f}% -> "
        f"{100 * shares[1]:.1f}%"
    )
    return shares


if __name__ == "__main__":
    sys.exit(run_cli(lambda argv: main(argv) and 0))
