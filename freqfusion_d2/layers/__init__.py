"""Layers of freqfusion_d2: compiled ops, FreqFusion, the Seg-Aliasing filters (DAF, FreqMix) and
the SFM resamplers (ARS, MSAU). Depends on torch only."""

from .adaptive_resampler import AdaptiveResampler
from .adaptive_upsampler import MultiScaleAdaptiveUpsampler
from .carafe import CARAFE, carafe, carafe_ref
from .dealiasing import DeAliasingFilter, kept_bins
from .freqfusion import FreqFusion, normalize_kernels
from .frequency_mix import FrequencyMix, frequency_mix_num_parameters
from .freqfusion_sim import FreqFusionSimDirection, SimDirectionSampler
from .image_guided_upsample import (
    CascadeImageGuidedUpsample,
    ImageGuidedUpsample,
    LearnableHighPass,
)
from .local_sim_sampler import LocalSimGuidedSampler, local_cosine_similarity
from .ms_deform_attn import MSDeformAttn, ms_deform_attn, ms_deform_attn_ref

__all__ = [
    "AdaptiveResampler",
    "CARAFE",
    "carafe",
    "carafe_ref",
    "DeAliasingFilter",
    "kept_bins",
    "FrequencyMix",
    "frequency_mix_num_parameters",
    "FreqFusion",
    "normalize_kernels",
    "FreqFusionSimDirection",
    "SimDirectionSampler",
    "CascadeImageGuidedUpsample",
    "ImageGuidedUpsample",
    "LearnableHighPass",
    "LocalSimGuidedSampler",
    "MultiScaleAdaptiveUpsampler",
    "local_cosine_similarity",
    "MSDeformAttn",
    "ms_deform_attn",
    "ms_deform_attn_ref",
]
