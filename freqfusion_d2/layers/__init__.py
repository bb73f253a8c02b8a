"""Layers of freqfusion_d2: compiled ops, FreqFusion, and the Seg-Aliasing filters (DAF, FreqMix).
Depends on torch only."""

from .carafe import CARAFE, carafe, carafe_ref
from .dealiasing import DeAliasingFilter, kept_bins
from .freqfusion import FreqFusion, normalize_kernels
from .frequency_mix import FrequencyMix, frequency_mix_num_parameters
from .local_sim_sampler import LocalSimGuidedSampler, local_cosine_similarity
from .ms_deform_attn import MSDeformAttn, ms_deform_attn, ms_deform_attn_ref

__all__ = [
    "CARAFE",
    "carafe",
    "carafe_ref",
    "DeAliasingFilter",
    "kept_bins",
    "FrequencyMix",
    "frequency_mix_num_parameters",
    "FreqFusion",
    "normalize_kernels",
    "LocalSimGuidedSampler",
    "local_cosine_similarity",
    "MSDeformAttn",
    "ms_deform_attn",
    "ms_deform_attn_ref",
]
