"""Every shipped YAML loads through the project's setup and builds its model (no weights);
the FreqFusion configs carry the official per-model options."""

import glob
import os

import pytest
from detectron2.modeling import build_model

import freqfusion_d2.modeling  # noqa: F401  (registers the models)
from freqfusion_d2.engine import setup_cfg
from freqfusion_d2.modeling import FreqFusionFPN

ROOT = os.path.dirname(os.path.abspath(__file__ + "/.."))
ALL = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))
# Configs owned by this file's checks (other YAMLs, e.g. Mask2Former's, only need to load).
FPN_DIRS = ("COCO-PanopticSegmentation", "COCO-Detection", "COCO-InstanceSegmentation", "Synthetic")
LEAVES = [p for p in ALL if os.path.basename(os.path.dirname(p)) in FPN_DIRS and "Base-" not in p]
# Official mmdet FreqFusion FPN options (github.com/Linwei-Chen/FreqFusion,
# mmdetection/configs/{panoptic_fpn,faster_rcnn,mask_rcnn}/*_freqfusion.py):
# (FEATURE_RESAMPLE_GROUP, FEATURE_RESAMPLE_NORM).
OFFICIAL = {
    "panoptic_fpn_R_50_1x_freqfusion.yaml": (4, False),
    "panoptic_fpn_R_101_3x_freqfusion.yaml": (4, True),
    "faster_rcnn_R_50_FPN_1x_freqfusion.yaml": (4, True),
    "faster_rcnn_R_101_FPN_1x_freqfusion.yaml": (8, True),
    "mask_rcnn_R_50_FPN_1x_freqfusion.yaml": (4, True),
    "mask_rcnn_R_101_FPN_1x_freqfusion.yaml": (4, True),
}


def _rel(path):
    return os.path.relpath(path, ROOT)


def test_configs_found():
    names = {os.path.basename(p) for p in LEAVES}
    assert set(OFFICIAL) <= names
    assert {"panoptic_fpn_R_50_1x.yaml", "panoptic_fpn_R_101_3x.yaml"} <= names


@pytest.mark.parametrize("path", ALL, ids=_rel)
def test_yaml_loads(path):
    cfg = setup_cfg(path)
    assert cfg.MODEL.META_ARCHITECTURE


def test_bases_stay_inside_configs():
    for path in ALL:
        with open(path) as f:
            for line in f:
                if line.startswith("_BASE_:"):
                    base = line.split(":", 1)[1].strip().strip("\"'")
                    target = os.path.normpath(os.path.join(os.path.dirname(path), base))
                    assert target.startswith(os.path.join(ROOT, "configs")), (path, base)
                    assert os.path.exists(target), (path, base)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_freqfusion_options(name):
    (path,) = [p for p in LEAVES if os.path.basename(p) == name]
    cfg = setup_cfg(path)
    ff = cfg.MODEL.FREQFUSION
    assert cfg.MODEL.BACKBONE.NAME == "build_resnet_freqfusion_fpn_backbone"
    assert (ff.FEATURE_RESAMPLE_GROUP, ff.FEATURE_RESAMPLE_NORM) == OFFICIAL[name]
    assert ff.HAMMING_WINDOW and ff.FEATURE_RESAMPLE and ff.COMPRESS_RATIO == 8
    assert (ff.LOWPASS_KERNEL, ff.HIGHPASS_KERNEL) == (5, 3)
    assert ("R_101" in name) == (cfg.MODEL.RESNETS.DEPTH == 101)


@pytest.mark.parametrize("path", LEAVES, ids=_rel)
def test_model_builds_without_weights(path):
    cfg = setup_cfg(path, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    is_ff = cfg.MODEL.BACKBONE.NAME == "build_resnet_freqfusion_fpn_backbone"
    assert isinstance(model.backbone, FreqFusionFPN) == is_ff
