"""Agreement of an exported model with PyTorch: raw outputs and post-processed results."""

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

import torch
from detectron2.export.flatten import flatten_to_tuple
from detectron2.structures import Boxes, Instances

__all__ = ["Difference", "compare_raw_outputs", "compare_results", "output_names"]


@dataclass(frozen=True)
class Difference:
    """One compared output.

    Attributes:
        name: the output, e.g. ``instances.scores``.
        value: the largest absolute difference (floating outputs), the number of differing
            elements (integer outputs) or the fraction of differing pixels (binary maps).
        limit: the largest ``value`` accepted.
        detail: what ``value`` measures, or why the outputs cannot be compared.
    """

    name: str
    value: float
    limit: float
    detail: str

    @property
    def ok(self) -> bool:
        return self.value <= self.limit

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAIL"
        return f"{self.name}: {self.detail} {self.value:.3g} (limit {self.limit:.3g}) {verdict}"


def output_names(outputs: Any, prefix: str = "") -> List[str]:
    """Names of the tensors of ``flatten_to_tuple(outputs)``, in its order."""
    if isinstance(outputs, torch.Tensor):
        return [prefix or "output"]
    if isinstance(outputs, Boxes):
        return [prefix or "boxes"]
    sep = "." if prefix else ""
    if isinstance(outputs, Instances):
        fields = outputs.get_fields()
        names = [n for k in sorted(fields) for n in output_names(fields[k], prefix + sep + k)]
        return names + [prefix + sep + "image_size"]
    if isinstance(outputs, dict):
        return [n for k in sorted(outputs) for n in output_names(outputs[k], prefix + sep + k)]
    if isinstance(outputs, (list, tuple)):
        if len(outputs) == 1:
            return output_names(outputs[0], prefix)
        return [n for i, x in enumerate(outputs) for n in output_names(x, f"{prefix}{sep}{i}")]
    raise TypeError(f"output_names: cannot name outputs of type {type(outputs).__name__}")


def _tensor_difference(name: str, ref: torch.Tensor, out: torch.Tensor, rtol, atol) -> Difference:
    ref, out = torch.as_tensor(ref).cpu(), torch.as_tensor(out).cpu()
    if tuple(ref.shape) != tuple(out.shape):
        return Difference(
            name, float("inf"), 0.0, f"shape {tuple(out.shape)} instead of {tuple(ref.shape)}:"
        )
    if ref.numel() == 0:
        return Difference(name, 0.0, 0.0, "empty:")
    if ref.is_floating_point() or out.is_floating_point():
        ref, out = ref.double(), out.double()
        value = (ref - out).abs().max().item()
        limit = atol + rtol * ref.abs().max().item()
        return Difference(name, value, limit, "largest difference")
    value = (ref != out.to(ref.dtype)).sum().item()
    return Difference(name, float(value), 0.0, "differing elements")


def compare_raw_outputs(
    reference: Any, exported: Any, *, rtol: float = 1e-3, atol: float = 1e-4
) -> List[Difference]:
    """Compares the raw outputs of PyTorch and of an exported model, output by output.

    Floating outputs agree when ``max|ref - out| <= atol + rtol * max|ref|``; integer outputs
    must be equal.

    Args:
        reference, exported: the same structure (lists, dicts, Instances, Boxes, tensors).
        rtol, atol: tolerances of floating outputs.
    """
    ref_flat, ref_schema = flatten_to_tuple(reference)
    out_flat, out_schema = flatten_to_tuple(exported)
    names = output_names(reference)
    if len(ref_flat) != len(out_flat):
        return [
            Difference(
                "outputs", float("inf"), 0.0, f"{len(out_flat)} tensors instead of {len(ref_flat)}:"
            )
        ]
    return [
        _tensor_difference(name, r, o, rtol, atol) for name, r, o in zip(names, ref_flat, out_flat)
    ]


def _pixel_difference(name: str, ref: torch.Tensor, out: torch.Tensor, limit: float):
    ref, out = ref.cpu(), out.cpu()
    if tuple(ref.shape) != tuple(out.shape):
        return Difference(
            name, float("inf"), 0.0, f"shape {tuple(out.shape)} instead of {tuple(ref.shape)}:"
        )
    value = (ref != out).double().mean().item() if ref.numel() else 0.0
    return Difference(name, value, limit, "fraction of differing pixels")


def _compare_instances(prefix, ref: Instances, out: Instances, rtol, atol, pixel_limit):
    if len(ref) != len(out):
        return [
            Difference(
                prefix + "instances", float("inf"), 0.0, f"{len(out)} instead of {len(ref)}:"
            )
        ]
    diffs = []
    for key in sorted(ref.get_fields()):
        r, o = ref.get(key), out.get(key)
        if isinstance(r, Boxes):
            r, o = r.tensor, o.tensor
        name = f"{prefix}instances.{key}"
        if r.dtype == torch.bool:
            diffs.append(_pixel_difference(name, r, o, pixel_limit))
        else:
            diffs.append(_tensor_difference(name, r, o, rtol, atol))
    return diffs


def compare_results(
    reference: Sequence[Dict[str, Any]],
    results: Sequence[Dict[str, Any]],
    *,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    pixel_limit: float = 1e-3,
) -> List[Difference]:
    """Compares post-processed results (the output format of detectron2 models).

    ``sem_seg`` and instance boxes and scores are compared like raw outputs; binary instance
    masks and panoptic id maps by the fraction of pixels that differ (at most ``pixel_limit``);
    instance counts, classes and panoptic segment lists must be equal.
    """
    diffs = []
    for idx, (ref, res) in enumerate(zip(reference, results)):
        prefix = f"{idx}." if len(reference) > 1 else ""
        missing = sorted(set(ref) - set(res))
        if missing:
            diffs.append(Difference(f"{prefix}{missing}", float("inf"), 0.0, "missing:"))
        if "sem_seg" in ref and "sem_seg" in res:
            diffs.append(
                _tensor_difference(prefix + "sem_seg", ref["sem_seg"], res["sem_seg"], rtol, atol)
            )
        if "instances" in ref and "instances" in res:
            diffs.extend(
                _compare_instances(
                    prefix, ref["instances"], res["instances"], rtol, atol, pixel_limit
                )
            )
        if "panoptic_seg" in ref and "panoptic_seg" in res:
            (ref_ids, ref_info), (res_ids, res_info) = ref["panoptic_seg"], res["panoptic_seg"]
            diffs.append(_pixel_difference(prefix + "panoptic_seg", ref_ids, res_ids, pixel_limit))
            same = _segments(ref_info) == _segments(res_info)
            diffs.append(
                Difference(
                    prefix + "panoptic_seg.segments_info",
                    0.0 if same else 1.0,
                    0.0,
                    "differing segment lists",
                )
            )
    return diffs


def _segments(segments_info) -> List[tuple]:
    return [(s["id"], bool(s["isthing"]), int(s["category_id"])) for s in segments_info]
