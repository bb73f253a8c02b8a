"""Exports a detectron2 model of this project to ONNX or TorchScript and runs the exported file.

Formats and methods (as in detectron2's deployment tool):

* ``tracing`` + ``onnx``: ``torch.onnx.export`` (TorchScript-based exporter) of the traced raw
  inference; CARAFE and deformable attention become standard ONNX operators, so onnxruntime
  runs the file without custom ops. Run with onnxruntime.
* ``tracing`` + ``torchscript``: ``torch.jit.trace``; the file calls the compiled ops
  ``torch.ops.freqfusion_d2.*``, so the loading process must load them (``import
  freqfusion_d2`` in Python, or link ``freqfusion_d2/_C*.so`` in C++).
* ``scripting`` + ``torchscript``: ``torch.jit.script`` through detectron2's
  ``scripting_with_instances``; R-CNN and Panoptic FPN models (the semantic head of Panoptic FPN
  is traced inside the scripted module). Same runtime needs as traced TorchScript.

Exported graphs are specialised to the sample's size where the model reads sizes as Python
numbers (the level tables of Mask2Former's pixel decoder, the ROI pooler's level assignment):
export at the size you deploy.
"""

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.data.detection_utils import convert_PIL_to_numpy, read_image
from detectron2.export import TracingAdapter, dump_torchscript_IR, scripting_with_instances
from PIL import Image

from ..data.synthetic import render_synthetic_image
from .adapters import SCRIPTED_INSTANCE_FIELDS, DeployAdapter, get_deploy_adapter
from .compare import output_names

logger = logging.getLogger(__name__)

__all__ = ["ExportedModel", "export_model", "sample_inputs", "FORMATS", "METHODS", "ONNX_OPSET"]

FORMATS = ("onnx", "torchscript")
METHODS = ("tracing", "scripting")
# Default ONNX opset (GridSample, used by FreqFusion's resampler, needs 16).
ONNX_OPSET = 17


@dataclass
class ExportedModel:
    """An exported file and how to run it.

    Attributes:
        path: the written file.
        format, method: how it was exported.
        adapter: what it computes and what stays in Python.
        run: ``batched_inputs (one image) -> raw outputs`` in the structure of
            ``adapter.raw_inference``, computed by the exported file.
    """

    path: str
    format: str
    method: str
    adapter: DeployAdapter
    run: Callable[[List[Dict[str, Any]]], List[Dict[str, Any]]]


def sample_inputs(cfg, image_path: Optional[str] = None, seed: int = 0) -> List[Dict[str, Any]]:
    """One input dict as ``DefaultPredictor`` builds it (resized to the test size).

    Args:
        cfg: the model's config (``INPUT.FORMAT``, ``INPUT.MIN_SIZE_TEST``/``MAX_SIZE_TEST``).
        image_path: the sample image; None renders a synthetic scene (stuff regions and a few
            objects) of the test size, ``MIN_SIZE_TEST`` high and 4/3 as wide (at most
            ``MAX_SIZE_TEST``).
        seed: seed of the synthetic scene.
    """
    if image_path is not None:
        if not os.path.isfile(image_path):
            raise FileNotFoundError(f"--sample-image: {image_path} is not a file")
        image = read_image(image_path, format=cfg.INPUT.FORMAT)
    else:
        height = cfg.INPUT.MIN_SIZE_TEST
        width = min(round(height * 4 / 3), cfg.INPUT.MAX_SIZE_TEST)
        rgb, _, _ = render_synthetic_image(np.random.default_rng(seed), height, width)
        image = convert_PIL_to_numpy(Image.fromarray(rgb), cfg.INPUT.FORMAT)
    height, width = image.shape[:2]
    resize = T.ResizeShortestEdge(
        [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
    )
    image = resize.get_transform(image).apply_image(image)
    tensor = torch.as_tensor(np.ascontiguousarray(image.astype("float32").transpose(2, 0, 1)))
    return [{"image": tensor, "height": height, "width": width}]


def export_model(
    model: torch.nn.Module,
    batched_inputs: List[Dict[str, Any]],
    output_dir: str,
    *,
    format: str = "onnx",
    method: str = "tracing",
    opset: int = ONNX_OPSET,
) -> ExportedModel:
    """Exports ``model`` (in eval mode) and returns the file and a runner for it.

    Args:
        model: a GeneralizedRCNN, PanopticFPN or MaskFormer model.
        batched_inputs: one input dict (``image`` on the model's device); the graph is traced
            at its size.
        output_dir: folder for ``model.onnx`` or ``model.ts`` (and the TorchScript IR dumps).
        format: "onnx" or "torchscript".
        method: "tracing" or "scripting" (TorchScript only).
        opset: ONNX opset (17 or later).

    Raises:
        ValueError: for an unknown format or method, an unsupported combination, or an
            architecture that cannot be scripted.
    """
    if format not in FORMATS:
        raise ValueError(f"export_model: format must be one of {FORMATS}, got {format!r}")
    if method not in METHODS:
        raise ValueError(f"export_model: method must be one of {METHODS}, got {method!r}")
    if len(batched_inputs) != 1:
        raise ValueError(
            f"export_model: batched_inputs must hold one image, got {len(batched_inputs)}"
        )
    if model.training:
        raise ValueError("export_model: call model.eval() first")
    adapter = get_deploy_adapter(model)
    os.makedirs(output_dir, exist_ok=True)
    with warnings.catch_warnings():
        # Shape checks and detectron2's structures trigger these by the hundred; the results
        # are compared with PyTorch afterwards instead.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.onnx")
        if method == "scripting":
            if format != "torchscript":
                raise ValueError("export_model: scripting exports TorchScript only (format)")
            return _export_scripting(model, batched_inputs, adapter, output_dir)
        return _export_tracing(model, batched_inputs, adapter, output_dir, format, opset)


def _export_tracing(model, batched_inputs, adapter, output_dir, format, opset):
    image = batched_inputs[0]["image"]
    traceable = TracingAdapter(model, [{"image": image}], adapter.raw_inference).eval()
    with torch.no_grad():
        reference = adapter.raw_inference(model, [{"image": image}])
    names = output_names(reference)
    if format == "onnx":
        if opset < 17:
            raise ValueError(f"export_model: opset must be >= 17, got {opset}")
        path = os.path.join(output_dir, "model.onnx")
        with torch.no_grad():
            torch.onnx.export(
                traceable,
                (image,),
                path,
                dynamo=False,
                opset_version=opset,
                input_names=["image"],
                output_names=names,
            )
        # The exporter restores the adapter's training flag, which propagates to the model.
        traceable.eval()
        return ExportedModel(path, format, "tracing", adapter, _onnx_runner(path, traceable))
    with torch.no_grad():
        traced = torch.jit.trace(traceable, (image,))
    path = os.path.join(output_dir, "model.ts")
    torch.jit.save(traced, path)
    dump_torchscript_IR(traced, output_dir)
    return ExportedModel(path, format, "tracing", adapter, _traced_runner(path, traceable))


def _onnx_runner(path: str, traceable: TracingAdapter):
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError("Running ONNX files needs onnxruntime: pip install -e '.[deploy]'") from e
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(batched_inputs):
        image = batched_inputs[0]["image"].detach().cpu().numpy()
        outputs = session.run(None, {input_name: image})
        return traceable.outputs_schema(tuple(torch.from_numpy(o) for o in outputs))

    return run


def _traced_runner(path: str, traceable: TracingAdapter):
    module = torch.jit.load(path)

    def run(batched_inputs):
        with torch.no_grad():
            return traceable.outputs_schema(module(batched_inputs[0]["image"]))

    return run


def _export_scripting(model, batched_inputs, adapter: DeployAdapter, output_dir):
    if adapter.scriptable is None:
        raise ValueError(f"export_model: {adapter.name} cannot be scripted; use method='tracing'")
    scriptable = adapter.scriptable(model, batched_inputs[0]["image"])
    scripted = scripting_with_instances(scriptable, SCRIPTED_INSTANCE_FIELDS)
    path = os.path.join(output_dir, "model.ts")
    torch.jit.save(scripted, path)
    dump_torchscript_IR(scripted, output_dir)
    module = torch.jit.load(path)

    def run(inputs):
        with torch.no_grad():
            outputs = module(tuple({"image": x["image"]} for x in inputs))
        return adapter.from_scripted(outputs, inputs)

    return ExportedModel(path, "torchscript", "scripting", adapter, run)
