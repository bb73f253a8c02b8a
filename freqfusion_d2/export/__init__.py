"""Deployment: ONNX and TorchScript export of the project's models, and torch.compile.

Imports detectron2 (like :mod:`freqfusion_d2.modeling`); onnx and onnxruntime (the ``[deploy]``
extra) are imported only when an ONNX file is written or run.
"""

from .adapters import DeployAdapter, get_deploy_adapter
from .compare import Difference, compare_raw_outputs, compare_results, output_names
from .compile import compile_model
from .deploy import FORMATS, METHODS, ONNX_OPSET, ExportedModel, export_model, sample_inputs

__all__ = [
    "DeployAdapter",
    "Difference",
    "ExportedModel",
    "FORMATS",
    "METHODS",
    "ONNX_OPSET",
    "compare_raw_outputs",
    "compare_results",
    "compile_model",
    "export_model",
    "get_deploy_adapter",
    "output_names",
    "sample_inputs",
]
