"""Layers of freqfusion_d2: compiled ops and the FreqFusion module. Depends on torch only."""

from .carafe import CARAFE, carafe, carafe_ref
from .freqfusion import FreqFusion, normalize_kernels
from .freqfusion_sim import FreqFusionSimDirection, SimDirectionSampler
from .image_guided_upsample import (
    CascadeImageGuidedUpsample,
    ImageGuidedUpsample,
    LearnableHighPass,
)
from .local_sim_sampler import LocalSimGuidedSampler, local_cosine_similarity
from .ms_deform_attn import MSDeformAttn, ms_deform_attn, ms_deform_attn_ref

__all__ = [
    "CARAFE",
    "carafe",
    "carafe_ref",
    "FreqFusion",
    "normalize_kernels",
    "FreqFusionSimDirection",
    "SimDirectionSampler",
    "CascadeImageGuidedUpsample",
    "ImageGuidedUpsample",
    "LearnableHighPass",
    "LocalSimGuidedSampler",
    "local_cosine_similarity",
    "MSDeformAttn",
    "ms_deform_attn",
    "ms_deform_attn_ref",
]
