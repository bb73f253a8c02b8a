"""Translation of ``MODEL.FREQFUSION.*`` into FreqFusion constructor arguments."""

from typing import Any, Dict

from ..layers import FreqFusion

__all__ = ["freqfusion_kwargs_from_config", "make_freqfusion"]


def freqfusion_kwargs_from_config(cfg) -> Dict[str, Any]:
    """FreqFusion keyword arguments from ``cfg.MODEL.FREQFUSION``, without the channel counts.

    Returns:
        dict with ``compress_ratio`` (to be turned into ``compressed_channels`` by
        :func:`make_freqfusion`) and the module options.
    """
    ff = cfg.MODEL.FREQFUSION
    return {
        "compress_ratio": ff.COMPRESS_RATIO,
        "lowpass_kernel": ff.LOWPASS_KERNEL,
        "highpass_kernel": ff.HIGHPASS_KERNEL,
        "up_group": ff.UP_GROUP,
        "encoder_kernel": ff.ENCODER_KERNEL,
        "encoder_dilation": ff.ENCODER_DILATION,
        "feature_resample": ff.FEATURE_RESAMPLE,
        "feature_resample_group": ff.FEATURE_RESAMPLE_GROUP,
        "feature_resample_norm": ff.FEATURE_RESAMPLE_NORM,
        "hamming_window": ff.HAMMING_WINDOW,
        "comp_feat_upsample": ff.COMP_FEAT_UPSAMPLE,
        "semi_conv": ff.SEMI_CONV,
        "hr_residual": ff.HR_RESIDUAL,
        "use_high_pass": ff.USE_HIGH_PASS,
        "sampler_init": ff.SAMPLER_INIT,
    }


def make_freqfusion(hr_channels: int, lr_channels: int, *, compress_ratio: int = 8, **kwargs):
    """Builds a FreqFusion with ``compressed_channels = (hr + lr) // compress_ratio``.

    Args:
        hr_channels, lr_channels: channels of the high- and low-resolution inputs.
        compress_ratio: channel compression of the kernel predictor (official: 8).
        kwargs: other FreqFusion options, e.g. from :func:`freqfusion_kwargs_from_config`.
    """
    if compress_ratio < 1:
        raise ValueError(f"compress_ratio must be a positive int, got {compress_ratio}")
    compressed = (hr_channels + lr_channels) // compress_ratio
    if compressed < 1:
        raise ValueError(
            f"compress_ratio={compress_ratio} leaves no channels for hr_channels={hr_channels} "
            f"and lr_channels={lr_channels}"
        )
    return FreqFusion(hr_channels, lr_channels, compressed_channels=compressed, **kwargs)
