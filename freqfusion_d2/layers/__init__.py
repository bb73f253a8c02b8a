"""Layers of freqfusion_d2: compiled ops, FreqFusion, the SFM resamplers. Depends on torch only."""

from .adaptive_resampler import AdaptiveResampler
from .adaptive_upsampler import MultiScaleAdaptiveUpsampler
from .carafe import CARAFE, carafe, carafe_ref
from .freqfusion import FreqFusion, normalize_kernels
from .local_sim_sampler import LocalSimGuidedSampler, local_cosine_similarity
from .ms_deform_attn import MSDeformAttn, ms_deform_attn, ms_deform_attn_ref

__all__ = [
    "AdaptiveResampler",
    "CARAFE",
    "carafe",
    "carafe_ref",
    "FreqFusion",
    "normalize_kernels",
    "LocalSimGuidedSampler",
    "MultiScaleAdaptiveUpsampler",
    "local_cosine_similarity",
    "MSDeformAttn",
    "ms_deform_attn",
    "ms_deform_attn_ref",
]
