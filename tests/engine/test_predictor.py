"""The demo's Predictor and --confidence-threshold: applied to Mask2Former's instance and
panoptic outputs, rejected where it cannot apply; tools/convert_mmdet_freqfusion.py --help."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from freqfusion_d2.engine import Predictor, confidence_threshold_opts, setup_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
M2F = "configs/COCO-PanopticSegmentation/mask2former_tiny_FreqFusion_R18_synthetic_cpu.yaml"
FPN = "configs/Synthetic/panoptic_fpn_R_18_tiny.yaml"
# The tiny config predicts all three outputs, as the COCO panoptic configs do.
PANOPTIC = [
    "MODEL.MASK_FORMER.TEST.INSTANCE_ON",
    "True",
    "MODEL.MASK_FORMER.TEST.PANOPTIC_ON",
    "True",
]


def _m2f_predictions(threshold, image):
    cfg = setup_cfg(M2F, PANOPTIC, freeze=False)
    cfg.merge_from_list(confidence_threshold_opts(cfg, threshold))
    torch.manual_seed(0)  # the same random weights for every threshold
    return Predictor(cfg, threshold)(image)


def test_threshold_filters_mask2former_instances_and_segments():
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    everything = _m2f_predictions(0.0, image)
    scores = everything["instances"].scores
    assert len(scores) > 2
    cut = float(scores.median())
    some = _m2f_predictions(cut, image)
    assert len(some["instances"]) == int((scores >= cut).sum())
    assert 0 < len(some["instances"]) < len(scores)
    assert bool((some["instances"].scores >= cut).all())
    # Panoptic: the query's class score must exceed the threshold.
    assert len(everything["panoptic_seg"][1]) > 0
    none = _m2f_predictions(1.0, image)
    assert len(none["instances"]) == 0
    assert none["panoptic_seg"][1] == []
    assert int(none["panoptic_seg"][0].max()) == 0


def test_threshold_overrides_per_model():
    m2f = setup_cfg(M2F, PANOPTIC)
    assert confidence_threshold_opts(m2f, None) == []  # the config's own panoptic threshold
    assert confidence_threshold_opts(m2f, 0.3) == [
        "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD",
        "0.3",
    ]
    opts = confidence_threshold_opts(setup_cfg(FPN), None)
    assert opts[opts.index("MODEL.ROI_HEADS.SCORE_THRESH_TEST") + 1] == "0.5"
    assert opts[opts.index("MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH") + 1] == "0.5"


def test_threshold_rejected_where_it_has_no_effect():
    off = ["MODEL.MASK_FORMER.TEST.INSTANCE_ON", "False", "MODEL.MASK_FORMER.TEST.PANOPTIC_ON"]
    semantic_only = setup_cfg(M2F, off + ["False"])
    assert confidence_threshold_opts(semantic_only, None) == []
    with pytest.raises(ValueError, match="--confidence-threshold: has no effect.*semantic"):
        confidence_threshold_opts(semantic_only, 0.5)
    with pytest.raises(ValueError, match=r"1.5 is not a score; expected a value in \[0, 1\]"):
        confidence_threshold_opts(setup_cfg(FPN), 1.5)


def test_convert_tool_help_says_what_it_converts():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "convert_mmdet_freqfusion.py"), "--help"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert proc.returncode == 0, proc.stderr
    description = proc.stdout.split("\n\n")[1]
    assert "Converts an official FreqFusion mmdet checkpoint" in description
    assert "detectron2" in description
