"""Translation of ``MODEL.SFM.*`` into AdaptiveResampler and MultiScaleAdaptiveUpsampler
arguments, shared by the SFM backbones and heads."""

from typing import Any, Callable, Dict

from detectron2.layers import get_norm
from torch import nn

from ..layers import AdaptiveResampler, MultiScaleAdaptiveUpsampler

__all__ = [
    "sfm_norm",
    "ars_kwargs_from_config",
    "msau_kwargs_from_config",
    "make_ars",
    "make_msau",
    "make_demodulator",
]


def sfm_norm(name: str) -> Callable[[int], nn.Module]:
    """Norm factory: "" is no norm, any other name is detectron2's ``get_norm`` ("LN", "BN",
    "SyncBN", "GN", ...)."""
    if name == "":
        return lambda channels: nn.Identity()
    return lambda channels: get_norm(name, channels)


def ars_kwargs_from_config(cfg) -> Dict[str, Any]:
    """AdaptiveResampler keyword arguments (without the channels) from ``cfg.MODEL.SFM``."""
    sfm = cfg.MODEL.SFM
    if sfm.ARS_KERNEL < 3 or sfm.ARS_KERNEL % 2 == 0:
        raise ValueError(f"MODEL.SFM.ARS_KERNEL must be odd and >= 3, got {sfm.ARS_KERNEL}")
    return {
        "mode": sfm.ARS_MODE,
        "stride": sfm.ARS_STRIDE,
        "radius": sfm.ARS_KERNEL // 2,
        "fwhm": float(sfm.ARS_FWHM),
        "norm": sfm_norm(sfm.ARS_NORM),
    }


def msau_kwargs_from_config(cfg, demodulator: bool = False) -> Dict[str, Any]:
    """MultiScaleAdaptiveUpsampler keyword arguments from ``cfg.MODEL.SFM`` (scales from
    ``DEMOD_DILATIONS`` for a stage demodulator, else ``MSAU_DILATIONS``)."""
    sfm = cfg.MODEL.SFM
    return {
        "dilations": tuple(sfm.DEMOD_DILATIONS if demodulator else sfm.MSAU_DILATIONS),
        "kernel_size": sfm.MSAU_KERNEL,
        "inverse_iterations": sfm.MSAU_INVERSE_ITERATIONS,
    }


def make_ars(cfg, channels: int) -> AdaptiveResampler:
    """An ARS for a stage input of ``channels``."""
    return AdaptiveResampler(channels, **ars_kwargs_from_config(cfg))


def make_msau(cfg) -> MultiScaleAdaptiveUpsampler:
    """An MSAU for a final upsampling."""
    return MultiScaleAdaptiveUpsampler(**msau_kwargs_from_config(cfg))


def make_demodulator(cfg) -> MultiScaleAdaptiveUpsampler:
    """An MSAU that brings a stage output back to the undistorted frame."""
    return MultiScaleAdaptiveUpsampler(**msau_kwargs_from_config(cfg, demodulator=True))
