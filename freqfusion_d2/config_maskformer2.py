"""Config keys of Mask2Former (and of the DeepLab project it builds on).

``add_maskformer2_config(cfg)`` declares every key that upstream Mask2Former's
``add_maskformer2_config`` and detectron2's ``add_deeplab_config`` declare, with the upstream
defaults, so that upstream YAML files and the full ``config.yaml`` an upstream training run dumps
into its output folder merge without "Non-existent config key" errors. A few keys are kept only
for that reason; their comments say "unused" or "legacy".

The function is idempotent and never overrides a key that is already declared, so it can be
called before or after ``add_deeplab_config`` or ``add_freqfusion_config``.
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_maskformer2_config", "add_deeplab_keys"]


def _declare(node: CN, key: str, value) -> None:
    """Declares ``node.<key> = value`` unless the key exists already."""
    if key not in node:
        setattr(node, key, value)


def _subnode(node: CN, key: str) -> CN:
    if key not in node:
        setattr(node, key, CN())
    return getattr(node, key)


def add_deeplab_keys(cfg: CN) -> None:
    """Declares the keys of detectron2's ``projects/DeepLab`` ``add_deeplab_config``.

    Mask2Former's YAML files set ``MODEL.RESNETS.STEM_TYPE``, ``MODEL.RESNETS.RES5_MULTI_GRID``
    (both unused: the backbone is detectron2's ``build_resnet_backbone``, which always uses the
    basic stem) and the poly schedule keys. The DeepLab head keys are unused by Mask2Former and
    declared only so that dumped configs merge.
    """
    # Retry a random crop until no single class covers more than this fraction of it.
    _declare(cfg.INPUT.CROP, "SINGLE_CATEGORY_MAX_AREA", 1.0)
    # WarmupPolyLR: lr = base_lr * (1 - iter / max_iter) ** POLY_LR_POWER.
    _declare(cfg.SOLVER, "POLY_LR_POWER", 0.9)
    # WarmupPolyLR: floor of the poly factor (0 disables it).
    _declare(cfg.SOLVER, "POLY_LR_CONSTANT_ENDING", 0.0)
    head = cfg.MODEL.SEM_SEG_HEAD
    # Unused by Mask2Former (DeepLab head only).
    _declare(head, "LOSS_TYPE", "hard_pixel_mining")
    _declare(head, "PROJECT_FEATURES", ["res2"])
    _declare(head, "PROJECT_CHANNELS", [48])
    _declare(head, "ASPP_CHANNELS", 256)
    _declare(head, "ASPP_DILATIONS", [6, 12, 18])
    _declare(head, "ASPP_DROPOUT", 0.1)
    _declare(head, "USE_DEPTHWISE_SEPARABLE_CONV", False)
    # Unused by build_resnet_backbone (DeepLab ResNet only); Mask2Former YAMLs set them.
    _declare(cfg.MODEL.RESNETS, "RES4_DILATION", 1)
    _declare(cfg.MODEL.RESNETS, "RES5_MULTI_GRID", [1, 2, 4])
    _declare(cfg.MODEL.RESNETS, "STEM_TYPE", "deeplab")


def add_maskformer2_config(cfg: CN) -> None:
    """Declares the Mask2Former config keys (upstream names and defaults) on ``cfg``.

    Also declares the DeepLab keys (:func:`add_deeplab_keys`), since upstream always calls
    ``add_deeplab_config`` first.

    Args:
        cfg: a detectron2 config, typically from ``detectron2.config.get_cfg()``.
    """
    add_deeplab_keys(cfg)

    # ---- data ----
    # Training mapper: "mask_former_semantic", "mask_former_instance", "mask_former_panoptic",
    # "coco_instance_lsj" or "coco_panoptic_lsj".
    _declare(cfg.INPUT, "DATASET_MAPPER_NAME", "mask_former_semantic")
    # SSD-style photometric augmentation in the semantic / instance mappers.
    _declare(cfg.INPUT, "COLOR_AUG_SSD", False)
    # Semantic mapper: pad image and label to exactly this square size (-1: no padding).
    _declare(cfg.INPUT, "SIZE_DIVISIBILITY", -1)
    # Large-scale jitter (LSJ) mappers: output size and scale range.
    _declare(cfg.INPUT, "IMAGE_SIZE", 1024)
    _declare(cfg.INPUT, "MIN_SCALE", 0.1)
    _declare(cfg.INPUT, "MAX_SCALE", 2.0)

    # ---- solver ----
    # Weight decay of nn.Embedding parameters (decoder queries and level embeddings).
    _declare(cfg.SOLVER, "WEIGHT_DECAY_EMBED", 0.0)
    # "ADAMW" or "SGD".
    _declare(cfg.SOLVER, "OPTIMIZER", "ADAMW")
    # LR multiplier of every module whose name contains "backbone".
    _declare(cfg.SOLVER, "BACKBONE_MULTIPLIER", 0.1)

    mf = _subnode(cfg.MODEL, "MASK_FORMER")
    # ---- losses ----
    # Add the losses of every intermediate decoder prediction to the weight dict.
    _declare(mf, "DEEP_SUPERVISION", True)
    # Classification weight of the "no object" class.
    _declare(mf, "NO_OBJECT_WEIGHT", 0.1)
    # Loss and matching-cost weights.
    _declare(mf, "CLASS_WEIGHT", 1.0)
    _declare(mf, "DICE_WEIGHT", 1.0)
    _declare(mf, "MASK_WEIGHT", 20.0)
    # Point-sampled mask losses: points per mask, oversampling k and importance ratio beta.
    _declare(mf, "TRAIN_NUM_POINTS", 112 * 112)
    _declare(mf, "OVERSAMPLE_RATIO", 3.0)
    _declare(mf, "IMPORTANCE_SAMPLE_RATIO", 0.75)

    # ---- transformers ----
    # Attention heads of the transformer decoder and of the deformable pixel-decoder encoder.
    _declare(mf, "NHEADS", 8)
    # Dropout of the deformable encoder only (the masked decoder always uses 0.0).
    _declare(mf, "DROPOUT", 0.1)
    # FFN width of the transformer decoder (the encoder uses
    # SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD).
    _declare(mf, "DIM_FEEDFORWARD", 2048)
    # Legacy (MaskFormer v1): unused by Mask2Former.
    _declare(mf, "ENC_LAYERS", 0)
    # Decoder layers + 1: the first prediction is made from the learnable queries alone.
    _declare(mf, "DEC_LAYERS", 6)
    # Pre-norm decoder layers.
    _declare(mf, "PRE_NORM", False)
    # Decoder width D.
    _declare(mf, "HIDDEN_DIM", 256)
    # Number of queries Q.
    _declare(mf, "NUM_OBJECT_QUERIES", 100)
    # What the decoder attends to: "multi_scale_pixel_decoder" (Mask2Former),
    # "transformer_encoder", "pixel_embedding" or a backbone feature name (MaskFormer v1).
    _declare(mf, "TRANSFORMER_IN_FEATURE", "res5")
    # Always build the decoder's 1x1 input projections, even when CONVS_DIM == HIDDEN_DIM.
    _declare(mf, "ENFORCE_INPUT_PROJ", False)
    # Registered name (TRANSFORMER_DECODER_REGISTRY) of the transformer decoder.
    _declare(mf, "TRANSFORMER_DECODER_NAME", "MultiScaleMaskedTransformerDecoder")
    # Pad the batch to a multiple of this (< 0: use the backbone's size_divisibility).
    _declare(mf, "SIZE_DIVISIBILITY", 32)

    # ---- inference ----
    test = _subnode(mf, "TEST")
    _declare(test, "SEMANTIC_ON", True)
    _declare(test, "INSTANCE_ON", False)
    _declare(test, "PANOPTIC_ON", False)
    # Panoptic: keep queries whose class score exceeds this.
    _declare(test, "OBJECT_MASK_THRESHOLD", 0.0)
    # Panoptic: drop a segment whose visible part is below this fraction of its mask.
    _declare(test, "OVERLAP_THRESHOLD", 0.0)
    # Resize masks to the output size before semantic inference (forced on for panoptic and
    # instance inference).
    _declare(test, "SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE", False)

    # ---- pixel decoder ----
    head = cfg.MODEL.SEM_SEG_HEAD
    # Width M of the per-pixel mask embeddings.
    _declare(head, "MASK_DIM", 256)
    # Deformable encoder layers E.
    _declare(head, "TRANSFORMER_ENC_LAYERS", 0)
    # Registered name (SEM_SEG_HEADS_REGISTRY) of the pixel decoder: "MSDeformAttnPixelDecoder",
    # "FreqAwareMSDeformAttnPixelDecoder2" (= "FreqFusionMSDeformAttnPixelDecoder") or
    # "FreqAwareMSDeformAttnPixelDecoder" (historic v1). The upstream default "BasePixelDecoder"
    # (MaskFormer v1) is not provided by this package.
    _declare(head, "PIXEL_DECODER_NAME", "BasePixelDecoder")
    # Backbone features fed to the deformable encoder.
    _declare(head, "DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES", ["res3", "res4", "res5"])
    # Sampling points per head and level of the deformable encoder.
    _declare(head, "DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS", 4)
    # Legacy: never read upstream; the encoder uses MASK_FORMER.NHEADS (a warning is logged
    # when this differs from it).
    _declare(head, "DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS", 8)
    # FFN width of the deformable encoder (hard-coded to 1024 upstream; new key).
    _declare(head, "DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD", 1024)

    # ---- Swin backbone (D2SwinTransformer) ----
    swin = _subnode(cfg.MODEL, "SWIN")
    # Pretraining image size (only sizes the absolute position embedding when APE).
    _declare(swin, "PRETRAIN_IMG_SIZE", 224)
    _declare(swin, "PATCH_SIZE", 4)
    _declare(swin, "EMBED_DIM", 96)
    _declare(swin, "DEPTHS", [2, 2, 6, 2])
    _declare(swin, "NUM_HEADS", [3, 6, 12, 24])
    _declare(swin, "WINDOW_SIZE", 7)
    _declare(swin, "MLP_RATIO", 4.0)
    _declare(swin, "QKV_BIAS", True)
    # Attention scale override (None: head_dim ** -0.5).
    _declare(swin, "QK_SCALE", None)
    _declare(swin, "DROP_RATE", 0.0)
    _declare(swin, "ATTN_DROP_RATE", 0.0)
    # Maximum stochastic-depth rate (linearly increasing over blocks).
    _declare(swin, "DROP_PATH_RATE", 0.3)
    # Absolute position embedding.
    _declare(swin, "APE", False)
    _declare(swin, "PATCH_NORM", True)
    _declare(swin, "OUT_FEATURES", ["res2", "res3", "res4", "res5"])
    # Gradient checkpointing of the Swin blocks (saves memory, costs time).
    _declare(swin, "USE_CHECKPOINT", False)
