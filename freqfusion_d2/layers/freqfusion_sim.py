"""FreqFusion whose offset generator reads the local similarities only (``direction_feat='sim'``).

The official SegNeXt integration (github.com/Linwei-Chen/FreqFusion,
``SegNeXt/mmseg/models/decode_heads/FreqFusion.py``, ``LocalSimGuidedSampler``) builds its
sampler with ``direction_feat='sim'``; the Mask2Former and mmdetection integrations use
``'sim_concat'`` (:class:`~freqfusion_d2.layers.LocalSimGuidedSampler`). With ``'sim'`` the offset
convolutions see only the 8 cosine similarities and the scale (gate) convolutions only the
normalised compressed features, so the convolutions have different input widths and the two
layouts' checkpoints are not interchangeable. Parameter names and shapes equal the official
module's, so SegNeXt FreqFusion weights load with ``strict=True``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .freqfusion import FreqFusion
from .local_sim_sampler import LocalSimGuidedSampler, local_cosine_similarity

__all__ = ["FreqFusionSimDirection", "SimDirectionSampler"]


class SimDirectionSampler(LocalSimGuidedSampler):
    """:class:`LocalSimGuidedSampler` with ``direction_feat='sim'``.

    Offsets = ``offset(sim_lr) + PU(hr_offset(sim_hr))``, gated by
    ``sigmoid(direct_scale(x_lr) + PU(hr_direct_scale(x_hr)))``, where ``sim`` are the local
    cosine similarities of the normalised compressed features ``x`` and PU is pixel-unshuffle.
    """

    def __init__(self, in_channels: int, *, groups: int = 4, kernel_size: int = 1, **kwargs):
        """Same arguments as :class:`LocalSimGuidedSampler`."""
        super().__init__(in_channels, groups=groups, kernel_size=kernel_size, **kwargs)
        sims = self.local_window * self.local_window - 1
        pad = kernel_size // 2
        lr_out = 2 * groups * self.scale**2
        hr_out = 2 * groups
        # Re-assigning keeps the registration order (and so the state-dict order).
        self.offset = nn.Conv2d(sims, lr_out, kernel_size, padding=pad)
        self.direct_scale = nn.Conv2d(in_channels, lr_out, kernel_size, padding=pad)
        self.hr_offset = nn.Conv2d(sims, hr_out, kernel_size, padding=pad)
        self.hr_direct_scale = nn.Conv2d(in_channels, hr_out, kernel_size, padding=pad)
        self.reset_offset_parameters()

    def forward(self, hr_x: torch.Tensor, lr_x: torch.Tensor, feat2sample: torch.Tensor):
        """See :meth:`LocalSimGuidedSampler.forward`."""
        hr_x = self.norm_hr(hr_x)
        lr_x = self.norm_lr(lr_x)
        hr_sim = local_cosine_similarity(hr_x, self.local_window).to(hr_x)
        lr_sim = local_cosine_similarity(lr_x, self.local_window).to(lr_x)
        offset = self.offset(lr_sim) + F.pixel_unshuffle(self.hr_offset(hr_sim), self.scale)
        gate = self.direct_scale(lr_x) + F.pixel_unshuffle(self.hr_direct_scale(hr_x), self.scale)
        offset = offset * gate.sigmoid() + self.init_pos
        return self._sample(feat2sample, offset)


class FreqFusionSimDirection(FreqFusion):
    """:class:`FreqFusion` whose ``dysampler`` is a :class:`SimDirectionSampler` (the FreqFusion
    of the official SegNeXt head ``LightHamHeadFreqAware``).

    Takes the same arguments as :class:`FreqFusion`; without ``feature_resample`` it is identical
    to it.
    """

    def __init__(
        self, hr_channels: int, lr_channels: int, *args, sampler_init: str = "official", **kwargs
    ):
        super().__init__(hr_channels, lr_channels, *args, sampler_init=sampler_init, **kwargs)
        if self.feature_resample:
            old = self.dysampler
            self.dysampler = SimDirectionSampler(
                self.compressed_channels,
                groups=old.groups,
                kernel_size=old.offset.kernel_size[0],
                local_window=old.local_window,
                norm=isinstance(old.norm_hr, nn.GroupNorm),
            )
            # The official initialisation covers the sampler's convolutions too.
            self.init_weights(sampler_init)
