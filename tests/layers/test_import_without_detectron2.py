"""freqfusion_d2.layers needs only PyTorch: it imports and runs where detectron2 cannot."""

import os
import subprocess
import sys

CODE = r"""
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("detectron2", "fvcore"):
            raise ImportError(f"{name} is blocked for the test")

sys.meta_path.insert(0, Block())
import torch
import freqfusion_d2
from freqfusion_d2.layers import FreqFusion, carafe, ms_deform_attn  # noqa: F401

module = FreqFusion(16, 16, compressed_channels=8, feature_resample=True)
_, hr, lr = module(torch.randn(1, 16, 8, 8), torch.randn(1, 16, 4, 4))
assert hr.shape == lr.shape == (1, 16, 8, 8)
assert not [m for m in sys.modules if m.split(".")[0] in ("detectron2", "fvcore")]
try:
    freqfusion_d2.add_freqfusion_config
except ImportError as e:
    assert "blocked" in str(e)
else:
    raise AssertionError("the config adder should need detectron2")
print("OK", freqfusion_d2.__version__)
"""


def test_layers_import_and_run_without_detectron2():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("OK ")
