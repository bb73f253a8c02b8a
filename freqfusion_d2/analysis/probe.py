"""``AliasingProbe``: aliasing scores at the input of every downsampling layer of a model."""

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from detectron2.modeling.backbone.resnet import ResNet
from torch import nn

from ..modeling.backbone.swin import PatchMerging
from .aliasing_score import (
    aliasing_energy,
    local_aliasing_map,
    nyquist,
    radial_power_spectrum,
)

__all__ = ["AliasingProbe", "ProbeTarget"]


@dataclass
class ProbeTarget:
    """One measured tensor: where it is taken and the cutoff it is scored with."""

    label: str
    module: str
    cutoff: float
    c_in: Optional[int] = None
    c_out: Optional[int] = None
    stride: Optional[int] = None
    #: "input" (what the layer receives, after DAF where there is one) or "before_daf".
    kind: str = "input"


@dataclass
class _Record:
    scores: List[float] = field(default_factory=list)
    aliased: float = 0.0
    total: float = 0.0
    spectrum_sum: Optional[np.ndarray] = None
    spectrum_count: int = 0
    last_scores: Optional[torch.Tensor] = None
    last_local_map: Optional[torch.Tensor] = None


def _tokens_to_nchw(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, _, c = x.shape
    return x.view(b, h, w, c).permute(0, 3, 1, 2)


def _first_4d(args) -> torch.Tensor:
    for a in args:
        if isinstance(a, torch.Tensor) and a.dim() == 4:
            return a
    raise ValueError("AliasingProbe: the hooked module received no (N, C, H, W) tensor")


class AliasingProbe:
    """Measures the aliasing score of the features that enter each downsampling layer.

    Targets found automatically (``backbone=True``):

    * every stage of a detectron2 :class:`ResNet` whose first block has a stride > 1 (res3,
      res4, res5; res5 is skipped when dilated), with ``C_in`` / ``C_out`` / stride from the
      stage shapes;
    * every Swin :class:`PatchMerging` (``C -> 2C``, stride 2), its ``(N, H*W, C)`` tokens
      viewed as ``(N, C, H, W)``.

    Where a :class:`~freqfusion_d2.layers.DeAliasingFilter` filters that input, the target is
    what the downsampling receives (after DAF) and a second target ``<label>:before_daf``
    measures the unfiltered feature (the one the decoder sees).

    Extra targets (e.g. decoder or FreqFusion inputs) are given by module name in ``layers``;
    their first ``(N, C, H, W)`` positional input is scored.

    Per target it accumulates the per-image scores (mean and std over images), the pooled
    ratio (aliased energy over total energy of all images) and, optionally, the radially
    averaged power spectrum and the local map of the latest batch. Scores are computed in
    float32 under ``torch.no_grad()``. Use as a context manager or call :meth:`remove`.

    Args:
        model: any ``nn.Module``.
        layers: extra module names, or a mapping name -> cutoff.
        backbone: add the ResNet stages and Swin patch mergings.
        cutoff: one cutoff for every backbone target (cycles/px); None uses
            ``nyquist(C_in, C_out, stride, cutoff_mode)``.
        cutoff_mode: "esr" or "plain" (see :func:`~freqfusion_d2.analysis.nyquist`).
        layer_cutoff: default cutoff of the ``layers`` targets given without one.
        region, power, remove_dc: options of :func:`~freqfusion_d2.analysis.aliasing_score`.
        spectrum_bins: accumulate the radial power spectrum in this many bins over [0, 0.5]
            cycles/px (0: off).
        local_maps: keep the local aliasing map of the latest batch per target.
        patch, stride: window of the local maps.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Union[Sequence[str], Mapping[str, float]] = (),
        *,
        backbone: bool = True,
        cutoff: Optional[float] = None,
        cutoff_mode: str = "esr",
        layer_cutoff: float = 0.35,
        region: str = "square",
        power: bool = True,
        remove_dc: bool = False,
        spectrum_bins: int = 0,
        local_maps: bool = False,
        patch: int = 16,
        stride: int = 8,
    ):
        if cutoff_mode not in ("esr", "plain"):
            raise ValueError(f"cutoff_mode: expected 'esr' or 'plain', got {cutoff_mode!r}")
        self.model = model
        self.options = dict(region=region, power=power, remove_dc=remove_dc)
        self.spectrum_bins = int(spectrum_bins)
        self.local_maps = local_maps
        self.patch, self.window_stride = patch, stride
        self.valid_fraction: Optional[Tuple[float, float]] = None
        self.targets: "OrderedDict[str, ProbeTarget]" = OrderedDict()
        self.records: Dict[str, _Record] = {}
        self._handles = []
        modules = dict(model.named_modules())
        if backbone:
            for name, module in modules.items():
                if isinstance(module, ResNet):
                    self._add_resnet(name, module, cutoff, cutoff_mode)
                elif isinstance(module, PatchMerging):
                    self._add_patch_merging(name, module, cutoff, cutoff_mode)
        items = layers.items() if isinstance(layers, Mapping) else [(n, None) for n in layers]
        for name, layer_cut in items:
            if name not in modules:
                raise ValueError(f"layers: no module named {name!r} in the model")
            target = ProbeTarget(name, name, layer_cutoff if layer_cut is None else layer_cut)
            self._hook_input(modules[name], target)
        if not self.targets:
            raise ValueError(
                "AliasingProbe: found nothing to measure (no detectron2 ResNet or Swin "
                "PatchMerging in the model and no layers given)"
            )

    # ------------------------------------------------------------------ target discovery
    def _add_resnet(self, prefix: str, resnet: ResNet, cutoff, cutoff_mode) -> None:
        prev = "stem"
        dafs = getattr(resnet, "daf", None)
        for stage_name in resnet.stage_names:
            c_in = resnet._out_feature_channels[prev]
            c_out = resnet._out_feature_channels[stage_name]
            ratio = resnet._out_feature_strides[stage_name] // resnet._out_feature_strides[prev]
            prev = stage_name
            if ratio <= 1:
                continue
            stage = getattr(resnet, stage_name)
            path = f"{prefix}.{stage_name}" if prefix else stage_name
            cut = cutoff if cutoff is not None else nyquist(c_in, c_out, ratio, cutoff_mode)
            target = ProbeTarget(path, path, cut, c_in, c_out, ratio)
            if dafs is not None and stage_name in dafs:
                raw = ProbeTarget(path + ":before_daf", path, cut, c_in, c_out, ratio)
                raw.kind = "before_daf"
                self._hook_input(stage, raw, prepend=True)
            self._hook_input(stage, target)

    def _add_patch_merging(self, name: str, module: PatchMerging, cutoff, cutoff_mode) -> None:
        c_out = module.reduction.out_features
        c_in = module.reduction.in_features // 4
        cut = cutoff if cutoff is not None else nyquist(c_in, c_out, 2, cutoff_mode)
        target = ProbeTarget(name, name, cut, c_in, c_out, 2)
        daf = getattr(module, "daf", None)
        if daf is None:
            self._register(module.register_forward_pre_hook(self._token_hook(target)), target)
            return
        raw = ProbeTarget(name + ":before_daf", name, cut, c_in, c_out, 2, kind="before_daf")
        self._register(module.register_forward_pre_hook(self._token_hook(raw)), raw)

        def after_daf(_module, _args, output, target=target):
            self._measure(target, output)

        self._register(daf.register_forward_hook(after_daf), target)

    def _token_hook(self, target: ProbeTarget):
        def hook(_module, args):
            x, h, w = args[:3]
            self._measure(target, _tokens_to_nchw(x, h, w))

        return hook

    def _hook_input(self, module: nn.Module, target: ProbeTarget, prepend: bool = False) -> None:
        def hook(_module, args):
            self._measure(target, _first_4d(args))

        self._register(module.register_forward_pre_hook(hook, prepend=prepend), target)

    def _register(self, handle, target: ProbeTarget) -> None:
        if target.label in self.targets:
            raise ValueError(f"AliasingProbe: target {target.label!r} registered twice")
        self.targets[target.label] = target
        self.records[target.label] = _Record()
        self._handles.append(handle)

    # ------------------------------------------------------------------------ measuring
    def set_valid_fraction(self, fraction: Optional[Tuple[float, float]]) -> None:
        """Score only the top-left ``(fh, fw)`` fraction of every feature (the part covering
        the image when a batch is padded to a size divisibility); None: all of it."""
        if fraction is not None and not all(0 < f <= 1 for f in fraction):
            raise ValueError(f"fraction: expected two values in (0, 1], got {fraction!r}")
        self.valid_fraction = None if fraction is None else tuple(fraction)

    @torch.no_grad()
    def _measure(self, target: ProbeTarget, feat: torch.Tensor) -> None:
        feat = feat.detach()
        if self.valid_fraction is not None:
            h, w = feat.shape[-2:]
            fh, fw = self.valid_fraction
            feat = feat[..., : max(1, math.ceil(h * fh)), : max(1, math.ceil(w * fw))]
        record = self.records[target.label]
        aliased, total = aliasing_energy(feat, target.cutoff, **self.options)
        scores = torch.where(total > 0, aliased / total.clamp_min(1e-30), 0.0)
        record.scores.extend(scores.cpu().tolist())
        record.aliased += float(aliased.sum())
        record.total += float(total.sum())
        record.last_scores = scores.cpu()
        if self.spectrum_bins:
            _, power = radial_power_spectrum(
                feat, self.spectrum_bins, remove_dc=self.options["remove_dc"]
            )
            power = torch.nan_to_num(power, nan=0.0).sum(0).cpu().numpy()
            record.spectrum_sum = (
                power if record.spectrum_sum is None else record.spectrum_sum + power
            )
            record.spectrum_count += feat.shape[0]
        if self.local_maps:
            record.last_local_map = local_aliasing_map(
                feat, target.cutoff, self.patch, self.window_stride, **self.options
            ).cpu()

    # ----------------------------------------------------------------------- reporting
    def reset(self) -> None:
        """Forgets everything measured so far (the hooks stay)."""
        for label in self.records:
            self.records[label] = _Record()

    def export(self) -> Dict[str, dict]:
        """Plain-data state per target (e.g. to gather it across processes)."""
        return {
            label: {
                "scores": list(r.scores),
                "aliased": r.aliased,
                "total": r.total,
                "spectrum_sum": None if r.spectrum_sum is None else r.spectrum_sum.tolist(),
                "spectrum_count": r.spectrum_count,
            }
            for label, r in self.records.items()
        }

    def summary(self, exports: Optional[Sequence[Dict[str, dict]]] = None) -> "OrderedDict":
        """Per target: ``mean`` and ``std`` (over images), ``pooled``, ``count``, ``cutoff``,
        ``c_in``, ``c_out``, ``stride``, ``kind``, ``module`` and, with ``spectrum_bins``, the
        mean radial ``spectrum`` and its bin ``frequencies``.

        Args:
            exports: states from :meth:`export` of several processes to merge (default: this
                probe's own).
        """
        exports = [self.export()] if exports is None else list(exports)
        out = OrderedDict()
        for label, target in self.targets.items():
            parts = [e[label] for e in exports]
            scores = np.asarray([s for p in parts for s in p["scores"]], dtype=np.float64)
            total = sum(p["total"] for p in parts)
            entry = {
                "mean": float(scores.mean()) if scores.size else float("nan"),
                "std": float(scores.std()) if scores.size else float("nan"),
                "pooled": sum(p["aliased"] for p in parts) / total if total > 0 else float("nan"),
                "count": int(scores.size),
                "cutoff": target.cutoff,
                "c_in": target.c_in,
                "c_out": target.c_out,
                "stride": target.stride,
                "kind": target.kind,
                "module": target.module,
            }
            if self.spectrum_bins:
                count = sum(p["spectrum_count"] for p in parts)
                sums = [np.asarray(p["spectrum_sum"]) for p in parts if p["spectrum_sum"]]
                entry["spectrum"] = (np.sum(sums, axis=0) / count).tolist() if count else []
                entry["frequencies"] = (
                    (np.arange(self.spectrum_bins) + 0.5) * 0.5 / self.spectrum_bins
                ).tolist()
            out[label] = entry
        return out

    def remove(self) -> None:
        """Removes the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False
