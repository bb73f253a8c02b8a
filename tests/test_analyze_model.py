"""tools/analyze_model.py on the tiny synthetic config: parameter count and FLOPs."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "Synthetic" / "panoptic_fpn_R_18_tiny_freqfusion.yaml")


def _load_tool():
    path = REPO / "tools" / "analyze_model.py"
    module_spec = importlib.util.spec_from_file_location("analyze_model", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_parameter_and_flop_counts(tmp_path):
    from detectron2.modeling import build_model

    import freqfusion_d2.modeling  # noqa: F401
    from freqfusion_d2.engine import setup_cfg

    tool = _load_tool()
    out = tmp_path / "counts.json"
    argv = ["--config-file", CONFIG, "--tasks", "parameter", "flop", "--json-out", str(out)]
    result = tool.main(argv + ["MODEL.FPN.FUSE_TYPE", "sum"])

    model = build_model(setup_cfg(CONFIG, ["MODEL.DEVICE", "cpu"]))
    assert result["parameters"] == sum(p.numel() for p in model.parameters())
    assert 0 < result["backbone_parameters"] < result["parameters"]
    assert json.loads(out.read_text()) == result

    # A 480x640 image through the test resize (MIN_SIZE_TEST 112, MAX_SIZE_TEST 192).
    assert result["input_size"] == [112, 149]
    assert 0 < result["backbone_flops"] < result["flops"]


def test_carafe_flop_handle():
    from freqfusion_d2.layers import carafe
    from freqfusion_d2.layers._ext import has_kernel_for

    if not has_kernel_for(torch.device("cpu")):
        pytest.skip("freqfusion_d2._C not built: carafe runs the reference op")

    tool = _load_tool()

    class Up(torch.nn.Module):
        def forward(self, features, masks):
            return carafe(features, masks, kernel_size=3, group_size=2, scale_factor=2)

    features, masks = torch.randn(1, 4, 5, 5), torch.randn(1, 2 * 9, 10, 10)
    total, _, _ = tool.count_flops(Up(), (features, masks))
    assert total == 4 * 10 * 10 * 9  # one k*k weighted sum per output value
