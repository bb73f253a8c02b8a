"""Official Mask2Former / FreqFusion-fork YAMLs load and build here unchanged.

* Always: tiny YAMLs written by the test in the shapes of the official ones (``_BASE_`` chains,
  a fork Cityscapes Swin config with ``MaskFormerFreqAware`` + ``MaskFormerHeadFreqAware`` and
  its duplicated ``SWIN:`` key, MaskFormer v1 heads with ``BasePixelDecoder`` /
  ``TransformerEncoderPixelDecoder`` + ``StandardTransformerDecoder``), built and run.
* When ``FREQFUSION_UPSTREAM_CONFIGS`` names a folder of official YAMLs (e.g. the fork's
  ``Mask2Former/configs`` and upstream Mask2Former's ``configs``; searched recursively, video
  configs excluded): every YAML loads and every model builds (on the meta device, no weights).
"""

import glob
import os
import textwrap

import pytest
import torch
from detectron2.modeling import build_model
from m2f_testing import tiny_inputs

from freqfusion_d2.engine import setup_cfg
from freqfusion_d2.modeling.meta_arch import MaskFormerFreqAware, MaskFormerHeadFreqAware

ENV_VAR = "FREQFUSION_UPSTREAM_CONFIGS"
VIDEO_MARKERS = ("video", "youtubevis", "ytvis", "ovis")

# ----------------------------------------------------------------------- tiny official shapes

BASE = """
MODEL:
  BACKBONE:
    FREEZE_AT: 0
    NAME: "build_resnet_backbone"
  WEIGHTS: ""
  PIXEL_MEAN: [123.675, 116.280, 103.530]
  PIXEL_STD: [58.395, 57.120, 57.375]
  RESNETS:
    DEPTH: 18
    RES2_OUT_CHANNELS: 64
    STEM_TYPE: "basic"  # not used
    STRIDE_IN_1X1: False
    OUT_FEATURES: ["res2", "res3", "res4", "res5"]
    NORM: "SyncBN"
    RES5_MULTI_GRID: [1, 1, 1]  # not used
DATASETS:
  TRAIN: ("cityscapes_fine_sem_seg_train",)
  TEST: ("cityscapes_fine_sem_seg_val",)
SOLVER:
  OPTIMIZER: "ADAMW"
  LR_SCHEDULER_NAME: "WarmupPolyLR"
  BACKBONE_MULTIPLIER: 0.1
INPUT:
  MIN_SIZE_TRAIN: !!python/object/apply:eval ["[int(x * 0.1 * 64) for x in range(5, 21)]"]
  MIN_SIZE_TRAIN_SAMPLING: "choice"
  CROP:
    ENABLED: True
    TYPE: "absolute"
    SIZE: (32, 64)
    SINGLE_CATEGORY_MAX_AREA: 1.0
  COLOR_AUG_SSD: True
  SIZE_DIVISIBILITY: -1
  FORMAT: "RGB"
  DATASET_MAPPER_NAME: "mask_former_semantic"
TEST:
  AUG:
    ENABLED: False
    MIN_SIZES: [64, 96]
    MAX_SIZE: 256
    FLIP: True
VERSION: 2
"""

M2F_FREQAWARE = """
_BASE_: Base-Tiny-SemanticSegmentation.yaml
MODEL:
  META_ARCHITECTURE: "MaskFormer"
  SEM_SEG_HEAD:
    NAME: "MaskFormerHead"
    IGNORE_VALUE: 255
    NUM_CLASSES: 5
    CONVS_DIM: 64
    MASK_DIM: 64
    NORM: "GN"
    PIXEL_DECODER_NAME: "FreqAwareMSDeformAttnPixelDecoder2"
    IN_FEATURES: ["res2", "res3", "res4", "res5"]
    DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES: ["res3", "res4", "res5"]
    COMMON_STRIDE: 4
    TRANSFORMER_ENC_LAYERS: 1
  MASK_FORMER:
    TRANSFORMER_DECODER_NAME: "MultiScaleMaskedTransformerDecoder"
    TRANSFORMER_IN_FEATURE: "multi_scale_pixel_decoder"
    DEEP_SUPERVISION: True
    HIDDEN_DIM: 64
    NUM_OBJECT_QUERIES: 10
    NHEADS: 4
    DROPOUT: 0.0
    DIM_FEEDFORWARD: 128
    DEC_LAYERS: 3
    SIZE_DIVISIBILITY: 32
    TRAIN_NUM_POINTS: 256
    TEST:
      SEMANTIC_ON: True
      INSTANCE_ON: False
      PANOPTIC_ON: False
"""

# The fork's Cityscapes Swin FreqAware YAML, tiny; "SWIN:" appears twice as in the original (the
# YAML loader keeps the last one).
SWIN_FREQAWARE = """
_BASE_: ../maskformer2_FreqAware_tiny.yaml
MODEL:
  #### for img freqfusion
  META_ARCHITECTURE: "MaskFormerFreqAware"
  SEM_SEG_HEAD:
    NAME: "MaskFormerHeadFreqAware"
  BACKBONE:
    NAME: "D2SwinTransformer"
  SWIN:
    USE_CHECKPOINT: True ####
  SWIN:
    EMBED_DIM: 32
    DEPTHS: [2, 2, 2, 2]
    NUM_HEADS: [1, 2, 4, 8]
    WINDOW_SIZE: 7
    APE: False
    DROP_PATH_RATE: 0.0
    PATCH_NORM: True
    PRETRAIN_IMG_SIZE: 384
  WEIGHTS: ""
"""

# MaskFormer (v1) heads: FPN pixel decoders and the DETR predictor.
V1_TRANSFORMER_ENCODER = """
_BASE_: maskformer2_FreqAware_tiny.yaml
MODEL:
  SEM_SEG_HEAD:
    PIXEL_DECODER_NAME: "TransformerEncoderPixelDecoder"
    TRANSFORMER_ENC_LAYERS: 1
  MASK_FORMER:
    TRANSFORMER_DECODER_NAME: "StandardTransformerDecoder"
    TRANSFORMER_IN_FEATURE: "transformer_encoder"
    ENC_LAYERS: 0
    DEC_LAYERS: 2
"""

V1_BASE = """
_BASE_: maskformer2_FreqAware_tiny.yaml
MODEL:
  SEM_SEG_HEAD:
    PIXEL_DECODER_NAME: "BasePixelDecoder"
  MASK_FORMER:
    TRANSFORMER_DECODER_NAME: "StandardTransformerDecoder"
    TRANSFORMER_IN_FEATURE: "res5"
    ENC_LAYERS: 1
    DEC_LAYERS: 2
"""

# And upstream's default pixel decoder (BasePixelDecoder) under the Mask2Former decoder.
M2F_BASE_DECODER = """
_BASE_: maskformer2_FreqAware_tiny.yaml
MODEL:
  SEM_SEG_HEAD:
    PIXEL_DECODER_NAME: "BasePixelDecoder"
"""

TINY_FILES = {
    "Base-Tiny-SemanticSegmentation.yaml": BASE,
    "maskformer2_FreqAware_tiny.yaml": M2F_FREQAWARE,
    "swin/maskformer2_FreqAware_swin_tiny.yaml": SWIN_FREQAWARE,
    "maskformer_v1_transformer_encoder_tiny.yaml": V1_TRANSFORMER_ENCODER,
    "maskformer_v1_base_tiny.yaml": V1_BASE,
    "maskformer2_base_pixel_decoder_tiny.yaml": M2F_BASE_DECODER,
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("official_shapes")
    for name, text in TINY_FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


def _leaves():
    return [n for n in TINY_FILES if not n.startswith("Base-")]


@pytest.mark.parametrize("name", _leaves())
def test_tiny_official_shapes_build_and_run(tiny_dir, name):
    cfg = setup_cfg(str(tiny_dir / name), ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    inputs = tiny_inputs()
    with torch.no_grad():
        out = model(inputs)
    assert out[0]["sem_seg"].shape == (5, 96, 128)
    assert out[1]["sem_seg"].shape == (5, 40, 50)  # resized to the requested output size
    assert all(torch.isfinite(o["sem_seg"]).all() for o in out)
    decoder = model.sem_seg_head.pixel_decoder
    assert type(decoder).__name__ == cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    predictor = model.sem_seg_head.predictor
    assert type(predictor).__name__ == cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    if "swin" in name:
        # The duplicated SWIN node: the second one wins, as with the fork.
        assert cfg.MODEL.SWIN.EMBED_DIM == 32 and cfg.MODEL.SWIN.USE_CHECKPOINT is False
        assert isinstance(model, MaskFormerFreqAware)
        assert isinstance(model.sem_seg_head, MaskFormerHeadFreqAware)
    else:
        assert type(model).__name__ == "MaskFormer"


# ------------------------------------------------------------------ the official YAMLs (optional)


def _official_configs():
    root = os.environ.get(ENV_VAR, "")
    if not root:
        return None, []
    paths = sorted(glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True))
    return root, [p for p in paths if not any(m in p.lower() for m in VIDEO_MARKERS)]


def _official_root_or_skip():
    root, paths = _official_configs()
    if root is None:
        pytest.skip(
            f"set {ENV_VAR} to a folder of official Mask2Former / FreqFusion-fork YAMLs (e.g. "
            f"the fork's Mask2Former/configs) to build every one of them"
        )
    if not paths:
        pytest.fail(f"{ENV_VAR}={root!r} contains no image (non-video) YAML")
    return root, paths


def _build_meta(path):
    cfg = setup_cfg(path, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "meta"])
    with torch.device("meta"):  # no memory, no initialisation
        return cfg, build_model(cfg)


def test_every_official_yaml_loads_and_builds():
    root, paths = _official_root_or_skip()
    failures, freqfusion_models, built = [], [], 0
    for path in paths:
        rel = os.path.relpath(path, root)
        try:
            if os.path.basename(path).startswith("Base-"):
                setup_cfg(path)
                continue
            cfg, model = _build_meta(path)
        except Exception as e:  # collect all failures, report them together
            failures.append(f"{rel}: {type(e).__name__}: {e}")
            continue
        built += 1
        head = cfg.MODEL.SEM_SEG_HEAD
        assert type(model).__name__ == cfg.MODEL.META_ARCHITECTURE, rel
        if "Freq" in head.PIXEL_DECODER_NAME or "Freq" in cfg.MODEL.META_ARCHITECTURE:
            assert len(model.sem_seg_head.pixel_decoder.freqfusions) in (2, 3), rel
            freqfusion_models.append(rel)
        if cfg.MODEL.META_ARCHITECTURE == "MaskFormerFreqAware":
            # The fork's Cityscapes Swin models: image-guided mask refinement in the head.
            assert isinstance(model.sem_seg_head, MaskFormerHeadFreqAware), rel
            assert len(model.sem_seg_head.IGU.up) == 2, rel
    assert not failures, "\n".join(failures)
    assert built > 0
