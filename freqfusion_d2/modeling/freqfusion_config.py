"""Translation of ``MODEL.FREQFUSION.*`` into FreqFusion constructor arguments.

Every model that builds FreqFusion modules (the FPN backbones, the Mask2Former pixel decoders)
reads its options here, so one set of keys configures all of them.
"""

from typing import Any, Dict

from ..layers import FreqFusion

__all__ = ["freqfusion_kwargs_from_config", "freqfusion_use_checkpoint", "make_freqfusion"]

# Options whose official value differs between models. Their config keys default to None
# ("the official value of the model"); each model passes its own values.
MODEL_DEPENDENT_OPTIONS = {
    "feature_resample": "FEATURE_RESAMPLE",
    "feature_resample_norm": "FEATURE_RESAMPLE_NORM",
    "hamming_window": "HAMMING_WINDOW",
}


def freqfusion_kwargs_from_config(cfg, **official) -> Dict[str, Any]:
    """FreqFusion keyword arguments from ``cfg.MODEL.FREQFUSION``, without the channel counts.

    Args:
        cfg: a config with the keys of :func:`freqfusion_d2.add_freqfusion_config`.
        official: the calling model's official values of the options in
            ``MODEL_DEPENDENT_OPTIONS`` (``feature_resample``, ``feature_resample_norm``,
            ``hamming_window``), used where the config leaves them None.

    Returns:
        dict with ``compress_ratio`` (to be turned into ``compressed_channels`` by
        :func:`make_freqfusion`) and the module options.
    """
    unknown = sorted(set(official) - set(MODEL_DEPENDENT_OPTIONS))
    if unknown:
        raise TypeError(f"freqfusion_kwargs_from_config: unexpected official values {unknown}")
    ff = cfg.MODEL.FREQFUSION
    kwargs = {
        "compress_ratio": ff.COMPRESS_RATIO,
        "lowpass_kernel": ff.LOWPASS_KERNEL,
        "highpass_kernel": ff.HIGHPASS_KERNEL,
        "up_group": ff.UP_GROUP,
        "encoder_kernel": ff.ENCODER_KERNEL,
        "encoder_dilation": ff.ENCODER_DILATION,
        "feature_resample_group": ff.FEATURE_RESAMPLE_GROUP,
        "comp_feat_upsample": ff.COMP_FEAT_UPSAMPLE,
        "semi_conv": ff.SEMI_CONV,
        "hr_residual": ff.HR_RESIDUAL,
        "use_high_pass": ff.USE_HIGH_PASS,
        "sampler_init": ff.SAMPLER_INIT,
    }
    for arg, key in MODEL_DEPENDENT_OPTIONS.items():
        value = ff[key]
        if value is None:
            if arg not in official:
                raise ValueError(f"MODEL.FREQFUSION.{key} must be set to True or False")
            value = official[arg]
        if not isinstance(value, bool):
            raise ValueError(f"MODEL.FREQFUSION.{key} must be True, False or None, got {value!r}")
        kwargs[arg] = value
    return kwargs


def freqfusion_use_checkpoint(cfg, official: bool) -> bool:
    """``MODEL.FREQFUSION.USE_CHECKPOINT``, or the model's ``official`` value when it is None."""
    value = cfg.MODEL.FREQFUSION.USE_CHECKPOINT
    if value is None:
        return official
    if not isinstance(value, bool):
        raise ValueError(
            f"MODEL.FREQFUSION.USE_CHECKPOINT must be True, False or None, got {value!r}"
        )
    return value


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
