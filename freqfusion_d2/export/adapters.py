"""What the exported graph of each meta-architecture computes, and what stays in Python.

An exported file takes one image (C, H, W) in ``INPUT.FORMAT``, already resized as
``DefaultPredictor`` does, and returns the raw network outputs: everything up to the first step
whose shapes or control flow depend on the data in a way ONNX and tracing cannot express. The
rest runs in Python on those outputs through :meth:`DeployAdapter.postprocess`, which reuses the
model's own post-processing, so ``postprocess(exported outputs)`` equals ``model(inputs)``.
"""

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from detectron2.modeling import GeneralizedRCNN, PanopticFPN
from detectron2.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
from detectron2.modeling.postprocessing import detector_postprocess, sem_seg_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn

from ..modeling.meta_arch import MaskFormer

logger = logging.getLogger(__name__)

__all__ = ["DeployAdapter", "get_deploy_adapter", "SCRIPTED_INSTANCE_FIELDS"]

# Fields of the Instances that scripted R-CNN models produce (detectron2's scripting needs them
# declared up front).
SCRIPTED_INSTANCE_FIELDS = {
    "proposal_boxes": Boxes,
    "objectness_logits": torch.Tensor,
    "pred_boxes": Boxes,
    "scores": torch.Tensor,
    "pred_classes": torch.Tensor,
    "pred_masks": torch.Tensor,
}


@dataclass(frozen=True)
class DeployAdapter:
    """How one meta-architecture is split between the exported graph and Python.

    Attributes:
        name: the meta-architecture.
        raw_inference: ``(model, batched_inputs) -> raw outputs``, the part that is exported:
            one dict per image of tensors and :class:`Instances`.
        postprocess: ``(model, raw outputs, batched_inputs) -> results`` in the format of
            ``model(batched_inputs)``; runs in Python.
        in_graph: what the exported graph computes (for logs and docs).
        in_python: what stays in Python and why.
        scriptable: ``(model, sample image) -> module`` whose
            ``forward(Tuple[Dict[str, Tensor]])`` returns one ``Dict[str, Tensor]`` of raw
            outputs per image, for ``torch.jit.script`` (the sample traces the parts that
            cannot be scripted); None where the architecture cannot be scripted.
        from_scripted: turns the scripted module's outputs into ``raw_inference``'s structure.
    """

    name: str
    raw_inference: Callable[[nn.Module, List[Dict[str, Any]]], List[Dict[str, Any]]]
    postprocess: Callable[[nn.Module, List[Dict[str, Any]], List[Dict[str, Any]]], List[Dict]]
    in_graph: str
    in_python: str
    scriptable: Optional[Callable[[nn.Module], nn.Module]] = None
    from_scripted: Optional[Callable[[List[Dict[str, Any]], List[Dict[str, Any]]], List]] = None


def _output_size(inputs: Dict[str, Any], image_size) -> Tuple[int, int]:
    height = inputs.get("height", image_size[0])
    width = inputs.get("width", image_size[1])
    return int(height), int(width)


def _image_size(instances: Instances) -> Tuple[int, int]:
    # Traced outputs rebuild image_size as tensors.
    return tuple(int(x) for x in instances.image_size)


def _instances_from_fields(fields: Dict[str, Any], image: torch.Tensor) -> Instances:
    fields = dict(fields)
    for name in ("pred_boxes", "proposal_boxes"):
        # A scripted Boxes comes back as a script object, or as its tensor once reloaded.
        if name in fields and not isinstance(fields[name], Boxes):
            boxes = fields[name]
            fields[name] = Boxes(boxes if isinstance(boxes, torch.Tensor) else boxes.tensor)
    return Instances(tuple(image.shape[-2:]), **fields)


# Mask R-CNN / Faster R-CNN ---------------------------------------------------------------------


def _rcnn_raw(model: GeneralizedRCNN, batched_inputs):
    instances = model.inference(batched_inputs, do_postprocess=False)
    return [{"instances": inst} for inst in instances]


def _rcnn_postprocess(model, raw, batched_inputs):
    results = []
    for out, inputs in zip(raw, batched_inputs):
        instances = out["instances"]
        height, width = _output_size(inputs, _image_size(instances))
        results.append({"instances": detector_postprocess(instances, height, width)})
    return results


class _ScriptableRCNN(nn.Module):
    def __init__(self, model: GeneralizedRCNN):
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, inputs: Tuple[Dict[str, torch.Tensor]]) -> List[Dict[str, torch.Tensor]]:
        instances = self.model.inference(inputs, do_postprocess=False)
        return [i.get_fields() for i in instances]


def _rcnn_from_scripted(outputs, batched_inputs):
    return [
        {"instances": _instances_from_fields(fields, inputs["image"])}
        for fields, inputs in zip(outputs, batched_inputs)
    ]


# Panoptic FPN ----------------------------------------------------------------------------------


def _panoptic_fpn_raw(model: PanopticFPN, batched_inputs):
    instances, sem_seg = model.inference(batched_inputs, do_postprocess=False)
    return [{"instances": i, "sem_seg": s} for i, s in zip(instances, sem_seg)]


def _panoptic_fpn_postprocess(model: PanopticFPN, raw, batched_inputs):
    # The steps of PanopticFPN.inference(do_postprocess=True) after the network.
    results = []
    for out, inputs in zip(raw, batched_inputs):
        image_size = _image_size(out["instances"])
        height, width = _output_size(inputs, image_size)
        sem_seg = sem_seg_postprocess(out["sem_seg"], image_size, height, width)
        instances = detector_postprocess(out["instances"], height, width)
        panoptic = combine_semantic_and_instance_outputs(
            instances,
            sem_seg.argmax(dim=0),
            model.combine_overlap_thresh,
            model.combine_stuff_area_thresh,
            model.combine_instances_score_thresh,
        )
        results.append({"sem_seg": sem_seg, "instances": instances, "panoptic_seg": panoptic})
    return results


class _SemSegLogits(nn.Module):
    """The semantic head at inference (traced: detectron2's head keeps a Python activation
    function as an attribute, which TorchScript cannot compile)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(features)[0]


class _ScriptablePanopticFPN(nn.Module):
    """Panoptic FPN without its Python inference: an R-CNN sharing the model's modules plus
    the traced semantic head."""

    def __init__(self, model: PanopticFPN, sem_seg_head: nn.Module):
        super().__init__()
        # PanopticFPN.forward itself cannot be scripted; GeneralizedRCNN's can.
        self.rcnn = GeneralizedRCNN(
            backbone=model.backbone,
            proposal_generator=model.proposal_generator,
            roi_heads=model.roi_heads,
            pixel_mean=model.pixel_mean.flatten().tolist(),
            pixel_std=model.pixel_std.flatten().tolist(),
        )
        self.sem_seg_head = sem_seg_head
        self.eval()

    def forward(self, inputs: Tuple[Dict[str, torch.Tensor]]) -> List[Dict[str, torch.Tensor]]:
        images = self.rcnn.preprocess_image(inputs)
        features = self.rcnn.backbone(images.tensor)
        sem_seg = self.sem_seg_head(features)
        proposals, _ = self.rcnn.proposal_generator(images, features, None)
        instances, _ = self.rcnn.roi_heads(images, features, proposals, None)
        outputs = [i.get_fields() for i in instances]
        for idx, out in enumerate(outputs):
            out["sem_seg"] = sem_seg[idx]
        return outputs


def _scriptable_panoptic_fpn(model: PanopticFPN, sample_image: torch.Tensor) -> nn.Module:
    images = model.preprocess_image([{"image": sample_image}])
    with torch.no_grad():
        features = model.backbone(images.tensor)
        head = torch.jit.trace(_SemSegLogits(model.sem_seg_head).eval(), (features,))
    return _ScriptablePanopticFPN(model, head)


def _panoptic_fpn_from_scripted(outputs, batched_inputs):
    raw = []
    for fields, inputs in zip(outputs, batched_inputs):
        fields = dict(fields)
        sem_seg = fields.pop("sem_seg")
        raw.append(
            {"instances": _instances_from_fields(fields, inputs["image"]), "sem_seg": sem_seg}
        )
    return raw


# Mask2Former -----------------------------------------------------------------------------------


def _maskformer_raw(model: MaskFormer, batched_inputs):
    images = model.preprocess_image(batched_inputs)
    outputs = model.sem_seg_head(model.backbone(images.tensor))
    return [
        {"pred_logits": logits, "pred_masks": masks}
        for logits, masks in zip(outputs["pred_logits"], outputs["pred_masks"])
    ]


def _maskformer_postprocess(model: MaskFormer, raw, batched_inputs):
    outputs = {
        "pred_logits": torch.stack([r["pred_logits"] for r in raw]),
        "pred_masks": torch.stack([r["pred_masks"] for r in raw]),
    }
    # Only the sizes of the padded batch are used: no need to normalise the images again.
    images = ImageList.from_tensors([x["image"] for x in batched_inputs], model.size_divisibility)
    return model.inference(outputs, batched_inputs, images)


_ADAPTERS = {
    # Subclasses first: PanopticFPN is a GeneralizedRCNN.
    PanopticFPN: lambda: DeployAdapter(
        name="PanopticFPN",
        raw_inference=_panoptic_fpn_raw,
        postprocess=_panoptic_fpn_postprocess,
        in_graph="backbone (with FreqFusion), semantic logits at the padded input size, RPN, "
        "box and mask heads: boxes, scores, classes and 28x28 mask logits per detection",
        in_python="pasting the masks into the image and rescaling to the output size "
        "(detector_postprocess), resizing the semantic logits (sem_seg_postprocess) and the "
        "panoptic merge (combine_semantic_and_instance_outputs): data-dependent loops over "
        "the detections",
        scriptable=_scriptable_panoptic_fpn,
        from_scripted=_panoptic_fpn_from_scripted,
    ),
    GeneralizedRCNN: lambda: DeployAdapter(
        name="GeneralizedRCNN",
        raw_inference=_rcnn_raw,
        postprocess=_rcnn_postprocess,
        in_graph="backbone (with FreqFusion), RPN, box and mask heads: boxes, scores, classes "
        "and 28x28 mask logits per detection",
        in_python="pasting the masks into the image and rescaling the boxes to the output size "
        "(detector_postprocess)",
        scriptable=lambda model, sample_image: _ScriptableRCNN(model),
        from_scripted=_rcnn_from_scripted,
    ),
    MaskFormer: lambda: DeployAdapter(
        name="MaskFormer",
        raw_inference=_maskformer_raw,
        postprocess=_maskformer_postprocess,
        in_graph="normalisation, backbone, pixel decoder (FreqFusion + deformable attention) "
        "and transformer decoder: class logits (Q, K+1) and mask logits (Q, H/4, W/4)",
        in_python="upsampling the masks to the output size and the semantic, panoptic and "
        "instance inference (MaskFormer.inference): the panoptic merge loops over the kept "
        "queries",
    ),
}


def get_deploy_adapter(model: nn.Module) -> DeployAdapter:
    """The :class:`DeployAdapter` of ``model``'s meta-architecture.

    Raises:
        ValueError: for a meta-architecture this module does not know.
    """
    for cls, make in _ADAPTERS.items():
        if isinstance(model, cls):
            return make()
    raise ValueError(
        f"get_deploy_adapter: no export support for {type(model).__name__}; supported "
        f"meta-architectures: {', '.join(c.__name__ for c in _ADAPTERS)}"
    )
