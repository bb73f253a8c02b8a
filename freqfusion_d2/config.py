"""Config keys of freqfusion_d2. Depends on detectron2.config only."""

from detectron2.config import CfgNode as CN

__all__ = ["add_freqfusion_config"]


def add_freqfusion_config(cfg: CN) -> None:
    """Declares every key this project reads, with working defaults, on a detectron2 config.

    Call it once on ``detectron2.config.get_cfg()`` before merging a YAML of this project; the
    config then still rejects unknown keys. Calling it twice is harmless.

    Args:
        cfg: a detectron2 ``CfgNode`` (modified in place).
    """
    # ---------------------------------------------------------------------------------------
    # FreqFusion module options (freqfusion_d2.layers.FreqFusion). The defaults are the values
    # of the official mmdet FPN configs (github.com/Linwei-Chen/FreqFusion
    # mmdetection/configs/{panoptic_fpn,faster_rcnn,mask_rcnn}/*_freqfusion.py).
    # ---------------------------------------------------------------------------------------
    cfg.MODEL.FREQFUSION = CN()
    # Size of the adaptive low-pass filter that upsamples the low-resolution feature.
    cfg.MODEL.FREQFUSION.LOWPASS_KERNEL = 5
    # Size of the adaptive high-pass filter that sharpens the high-resolution feature.
    cfg.MODEL.FREQFUSION.HIGHPASS_KERNEL = 3
    # compressed_channels = (hr_channels + lr_channels) // COMPRESS_RATIO (256+256 -> 64).
    cfg.MODEL.FREQFUSION.COMPRESS_RATIO = 8
    # Kernel size and dilation of the two kernel encoders (the size also applies to the
    # offset generator's convolutions).
    cfg.MODEL.FREQFUSION.ENCODER_KERNEL = 3
    cfg.MODEL.FREQFUSION.ENCODER_DILATION = 1
    # CARAFE groups of the filters. The official code only runs 1.
    cfg.MODEL.FREQFUSION.UP_GROUP = 1
    # Build the offset generator that resamples the upsampled low-resolution feature.
    cfg.MODEL.FREQFUSION.FEATURE_RESAMPLE = True
    # Offset groups of the resampler (official: 4; 8 for Faster R-CNN R-101).
    cfg.MODEL.FREQFUSION.FEATURE_RESAMPLE_GROUP = 4
    # GroupNorm on the resampler's inputs (official: False for Panoptic FPN R-50 and
    # Mask2Former, True for Panoptic FPN R-101 and Faster/Mask R-CNN).
    cfg.MODEL.FREQFUSION.FEATURE_RESAMPLE_NORM = True
    # Multiply the predicted kernels by a 2-D Hamming window (official: True in the FPN
    # necks, False in Mask2Former).
    cfg.MODEL.FREQFUSION.HAMMING_WINDOW = True
    # Upsample the low-resolution kernel logits with the high-resolution-guided filters.
    cfg.MODEL.FREQFUSION.COMP_FEAT_UPSAMPLE = True
    # Predict the kernels at high resolution and apply them with a 2x CARAFE to the
    # low-resolution feature (instead of interpolating it first).
    cfg.MODEL.FREQFUSION.SEMI_CONV = True
    # High-resolution output = 2 * hr - lowpass(hr) (instead of hr - lowpass(hr)).
    cfg.MODEL.FREQFUSION.HR_RESIDUAL = True
    # Build the adaptive high-pass branch (needed by COMP_FEAT_UPSAMPLE).
    cfg.MODEL.FREQFUSION.USE_HIGH_PASS = True
    # Recompute each FreqFusion in the backward pass to save activation memory.
    cfg.MODEL.FREQFUSION.USE_CHECKPOINT = False
    # Initialisation of the offset generator: "official" (xavier-uniform, as the official
    # code ends up doing) or "intended" (near-zero offsets and zero scales).
    cfg.MODEL.FREQFUSION.SAMPLER_INIT = "official"
    # FPN backbones only: replace detectron2's max-pooled P6 with the official mmdet neck's
    # layout: a 3x3 stride-2 conv on the coarsest input (res5) is the top of the top-down
    # path, a fourth FreqFusion fuses it into P5, and P6 = output conv of that lateral. Needs
    # input sizes divisible by 64 (handled through the backbone's size_divisibility).
    cfg.MODEL.FREQFUSION.FPN_EXTRA_P6 = False

    # ---------------------------------------------------------------------------------------
    # Data options (freqfusion_d2.data).
    # ---------------------------------------------------------------------------------------
    # Training mapper from freqfusion_d2.data.DATASET_MAPPER_REGISTRY; empty selects
    # detectron2's DatasetMapper (Panoptic FPN, Mask R-CNN, Faster R-CNN).
    cfg.INPUT.DATASET_MAPPER_NAME = ""

    # ---------------------------------------------------------------------------------------
    # Evaluation options (freqfusion_d2.evaluation).
    # ---------------------------------------------------------------------------------------
    cfg.TEST.BOUNDARY_EVAL = CN()
    # Add the boundary-error evaluator (on the semantic, else panoptic, output) when the
    # dataset has semantic ground truth.
    cfg.TEST.BOUNDARY_EVAL.ENABLED = False
    # Width in pixels of the boundary band the boundary metrics are computed in.
    cfg.TEST.BOUNDARY_EVAL.BAND_KERNEL = 15
