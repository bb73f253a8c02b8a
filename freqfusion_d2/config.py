"""Config keys of freqfusion_d2. Depends on detectron2.config only."""

from detectron2.config import CfgNode as CN

__all__ = ["add_freqfusion_config"]


def declare_key(node: CN, key: str, value) -> None:
    """Declares ``node.<key> = value`` unless the key exists already (so a value merged from
    a YAML or declared by another config adder is never overwritten)."""
    if key not in node:
        setattr(node, key, value)


def declare_node(node: CN, key: str) -> CN:
    """``node.<key>``, created empty if missing."""
    if key not in node:
        setattr(node, key, CN())
    return getattr(node, key)


def add_data_keys(cfg: CN) -> None:
    """Data keys shared by every model of the project (declared once, by either config adder)."""
    # Training mapper from freqfusion_d2.data.DATASET_MAPPER_REGISTRY; empty selects
    # detectron2's DatasetMapper (Panoptic FPN, Mask R-CNN, Faster R-CNN). The Mask2Former
    # YAMLs name theirs ("mask_former_semantic", "coco_panoptic_lsj", ...).
    declare_key(cfg.INPUT, "DATASET_MAPPER_NAME", "")


def add_freqfusion_config(cfg: CN) -> None:
    """Declares every key this project reads, with working defaults, on a detectron2 config.

    Call it on ``detectron2.config.get_cfg()`` before merging a YAML of this project; the config
    then still rejects unknown keys. It only declares keys that are not declared yet, so calling
    it twice, or before or after :func:`freqfusion_d2.add_maskformer2_config`, gives the same
    config.

    Args:
        cfg: a detectron2 ``CfgNode`` (modified in place).
    """
    # ---------------------------------------------------------------------------------------
    # FreqFusion options of every model (FPN backbones, Mask2Former pixel decoders): arguments
    # of freqfusion_d2.layers.FreqFusion. The defaults are the values of the official release
    # (github.com/Linwei-Chen/FreqFusion: the mmdetection configs of FreqFusionCARAFEFPN and
    # the Mask2Former FreqAwareMSDeformAttnPixelDecoder2). The keys whose official value
    # differs between models default to None, meaning "the official value of the model that
    # builds the module"; set True/False to force one value for every model.
    # ---------------------------------------------------------------------------------------
    ff = declare_node(cfg.MODEL, "FREQFUSION")
    # Size of the adaptive low-pass filter that upsamples the low-resolution feature.
    declare_key(ff, "LOWPASS_KERNEL", 5)
    # Size of the adaptive high-pass filter that sharpens the high-resolution feature.
    declare_key(ff, "HIGHPASS_KERNEL", 3)
    # compressed_channels = (hr_channels + lr_channels) // COMPRESS_RATIO (256+256 -> 64).
    declare_key(ff, "COMPRESS_RATIO", 8)
    # Kernel size and dilation of the two kernel encoders (the size also applies to the
    # offset generator's convolutions).
    declare_key(ff, "ENCODER_KERNEL", 3)
    declare_key(ff, "ENCODER_DILATION", 1)
    # CARAFE groups of the filters. The official code only runs 1.
    declare_key(ff, "UP_GROUP", 1)
    # Build the offset generator that resamples the upsampled low-resolution feature.
    # None: official (True, except the historic Mask2Former v1 decoder).
    declare_key(ff, "FEATURE_RESAMPLE", None)
    # Offset groups of the resampler (official: 4; 8 for Faster R-CNN R-101).
    declare_key(ff, "FEATURE_RESAMPLE_GROUP", 4)
    # GroupNorm on the resampler's inputs. None: official (True in the FPN backbones, False in
    # the Mask2Former decoders); the official Panoptic FPN R-50 config sets False, its YAML here
    # too.
    declare_key(ff, "FEATURE_RESAMPLE_NORM", None)
    # Multiply the predicted kernels by a 2-D Hamming window. None: official (True in the FPN
    # backbones, False in the Mask2Former decoders).
    declare_key(ff, "HAMMING_WINDOW", None)
    # Upsample the low-resolution kernel logits with the high-resolution-guided filters.
    declare_key(ff, "COMP_FEAT_UPSAMPLE", True)
    # Predict the kernels at high resolution and apply them with a 2x CARAFE to the
    # low-resolution feature (instead of interpolating it first).
    declare_key(ff, "SEMI_CONV", True)
    # High-resolution output = 2 * hr - lowpass(hr) (instead of hr - lowpass(hr)).
    declare_key(ff, "HR_RESIDUAL", True)
    # Build the adaptive high-pass branch (needed by COMP_FEAT_UPSAMPLE).
    declare_key(ff, "USE_HIGH_PASS", True)
    # Recompute each FreqFusion in the backward pass to save activation memory. None: official
    # (False, except the historic Mask2Former v1 decoder).
    declare_key(ff, "USE_CHECKPOINT", None)
    # Initialisation of the offset generator: "official" (xavier-uniform, as the official
    # code ends up doing) or "intended" (near-zero offsets and zero scales).
    declare_key(ff, "SAMPLER_INIT", "official")
    # FPN backbones only: replace detectron2's max-pooled P6 with the official mmdet neck's
    # layout: a 3x3 stride-2 conv on the coarsest input (res5) is the top of the top-down
    # path, a fourth FreqFusion fuses it into P5, and P6 = output conv of that lateral. Needs
    # input sizes divisible by 64 (handled through the backbone's size_divisibility).
    declare_key(ff, "FPN_EXTRA_P6", False)

    add_data_keys(cfg)

    # ---------------------------------------------------------------------------------------
    # Evaluation options (freqfusion_d2.evaluation).
    # ---------------------------------------------------------------------------------------
    boundary = declare_node(cfg.TEST, "BOUNDARY_EVAL")
    # Add the boundary-error evaluator (on the semantic, else panoptic, output) when the
    # dataset has semantic ground truth.
    declare_key(boundary, "ENABLED", False)
    # Width in pixels of the boundary band the boundary metrics are computed in.
    declare_key(boundary, "BAND_KERNEL", 15)

    _add_sfm_keys(cfg)


def _add_sfm_keys(cfg: CN) -> None:
    """Spatial Frequency Modulation (Chen et al., TPAMI 2025): adaptive resampling (ARS) in the
    backbone and multi-scale adaptive upsampling (MSAU); see docs/sfm.md."""
    sfm = declare_node(cfg.MODEL, "SFM")
    # Backbone stages with an ARS before them (on their input, i.e. before their stride-2
    # layer), e.g. ["res3", "res4", "res5"]; empty: no ARS. Read by build_resnet_sfm_backbone,
    # build_resnet_sfm_fpn_backbone and SFMSwinTransformer.
    declare_key(sfm, "ARS_STAGES", [])
    # Saliency generator of each ARS: "avgpsp" (pooling + pyramid context + 1x1 conv) or
    # "conv" (pooling + one 3x3 conv).
    declare_key(sfm, "ARS_MODE", "avgpsp")
    # The saliency and the Gaussian sums are computed at 1/ARS_STRIDE of the stage input.
    declare_key(sfm, "ARS_STRIDE", 2)
    # Side of the Gaussian window of the grid (odd), in saliency pixels.
    declare_key(sfm, "ARS_KERNEL", 63)
    # Full width at half maximum of that Gaussian, in saliency pixels.
    declare_key(sfm, "ARS_FWHM", 32.0)
    # Norm of the avgpsp pyramid branches, a detectron2 norm name. "LN" (per-position channel
    # norm) works for any batch size, including the 1x1 pooled branch of a single image; the
    # pre-release sampler used "SyncBN".
    declare_key(sfm, "ARS_NORM", "LN")
    # Use MSAU for the final upsampling of the segmentation output (SFMSemSegFPNHead) and of
    # Mask2Former's masks (MaskFormer inference and its point-sampled mask losses). Stage outputs
    # behind an ARS are always demodulated (see DEMOD_DILATIONS).
    declare_key(sfm, "MSAU", False)
    # MSAU scales: dilations of the neighbourhood, one learnable width and gate each.
    declare_key(sfm, "MSAU_DILATIONS", [1, 2])
    # Side of the MSAU neighbourhood (odd).
    declare_key(sfm, "MSAU_KERNEL", 3)
    # Newton steps that invert the sampling grids.
    declare_key(sfm, "MSAU_INVERSE_ITERATIONS", 5)
    # Scales of the MSAU that brings each stage output behind an ARS back to the undistorted
    # frame. Empty: bilinear interpolation at the inverted grid only (no parameters, cheapest).
    declare_key(sfm, "DEMOD_DILATIONS", [])
