"""Config keys of Mask2Former (and of the DeepLab project it builds on).

``add_maskformer2_config(cfg)`` declares every key that upstream Mask2Former's
``add_maskformer2_config`` and detectron2's ``add_deeplab_config`` declare, with the upstream
defaults, so that upstream YAML files and the full ``config.yaml`` an upstream training run dumps
into its output folder merge without "Non-existent config key" errors. A few keys are kept only
for that reason; their comments say "unused" or "legacy".

The function is idempotent and never overrides a key that is already declared, so it can be
called before or after ``add_deeplab_config`` or ``add_freqfusion_config``. One difference from
upstream: ``INPUT.DATASET_MAPPER_NAME`` defaults to "" (detectron2's ``DatasetMapper``), the
project-wide default, instead of "mask_former_semantic"; the Mask2Former base YAMLs set it.
"""

from detectron2.config import CfgNode as CN

from .config import add_data_keys, declare_key, declare_node

__all__ = ["add_maskformer2_config", "add_deeplab_keys"]


def add_deeplab_keys(cfg: CN) -> None:
    """Declares the keys of detectron2's ``projects/DeepLab`` ``add_deeplab_config``.

    Mask2Former's YAML files set ``MODEL.RESNETS.STEM_TYPE``, ``MODEL.RESNETS.RES5_MULTI_GRID``
    (both unused: the backbone is detectron2's ``build_resnet_backbone``, which always uses the
    basic stem) and the poly schedule keys. The DeepLab head keys are unused by Mask2Former and
    declared only so that dumped configs merge.
    """
    # Retry a random crop until no single class covers more than this fraction of it.
    declare_key(cfg.INPUT.CROP, "SINGLE_CATEGORY_MAX_AREA", 1.0)
    # WarmupPolyLR: lr = base_lr * (1 - iter / max_iter) ** POLY_LR_POWER.
    declare_key(cfg.SOLVER, "POLY_LR_POWER", 0.9)
    # WarmupPolyLR: floor of the poly factor (0 disables it).
    declare_key(cfg.SOLVER, "POLY_LR_CONSTANT_ENDING", 0.0)
    head = cfg.MODEL.SEM_SEG_HEAD
    # Unused by Mask2Former (DeepLab head only).
    declare_key(head, "LOSS_TYPE", "hard_pixel_mining")
    declare_key(head, "PROJECT_FEATURES", ["res2"])
    declare_key(head, "PROJECT_CHANNELS", [48])
    declare_key(head, "ASPP_CHANNELS", 256)
    declare_key(head, "ASPP_DILATIONS", [6, 12, 18])
    declare_key(head, "ASPP_DROPOUT", 0.1)
    declare_key(head, "USE_DEPTHWISE_SEPARABLE_CONV", False)
    # Unused by build_resnet_backbone (DeepLab ResNet only); Mask2Former YAMLs set them.
    declare_key(cfg.MODEL.RESNETS, "RES4_DILATION", 1)
    declare_key(cfg.MODEL.RESNETS, "RES5_MULTI_GRID", [1, 2, 4])
    declare_key(cfg.MODEL.RESNETS, "STEM_TYPE", "deeplab")


def add_maskformer2_config(cfg: CN) -> None:
    """Declares the Mask2Former config keys (upstream names and defaults) on ``cfg``.

    Also declares the DeepLab keys (:func:`add_deeplab_keys`), since upstream always calls
    ``add_deeplab_config`` first.

    Args:
        cfg: a detectron2 config, typically from ``detectron2.config.get_cfg()``.
    """
    add_deeplab_keys(cfg)

    # ---- data ----
    # INPUT.DATASET_MAPPER_NAME (the training mapper; the Mask2Former YAMLs set
    # "mask_former_semantic", "mask_former_instance", "mask_former_panoptic",
    # "coco_instance_lsj" or "coco_panoptic_lsj").
    add_data_keys(cfg)
    # SSD-style photometric augmentation in the semantic / instance mappers.
    declare_key(cfg.INPUT, "COLOR_AUG_SSD", False)
    # Semantic mapper: pad image and label to exactly this square size (-1: no padding).
    declare_key(cfg.INPUT, "SIZE_DIVISIBILITY", -1)
    # Large-scale jitter (LSJ) mappers: output size and scale range.
    declare_key(cfg.INPUT, "IMAGE_SIZE", 1024)
    declare_key(cfg.INPUT, "MIN_SCALE", 0.1)
    declare_key(cfg.INPUT, "MAX_SCALE", 2.0)

    # ---- solver ----
    # Weight decay of nn.Embedding parameters (decoder queries and level embeddings).
    declare_key(cfg.SOLVER, "WEIGHT_DECAY_EMBED", 0.0)
    # "ADAMW" or "SGD".
    declare_key(cfg.SOLVER, "OPTIMIZER", "ADAMW")
    # LR multiplier of every module whose name contains "backbone".
    declare_key(cfg.SOLVER, "BACKBONE_MULTIPLIER", 0.1)

    mf = declare_node(cfg.MODEL, "MASK_FORMER")
    # ---- losses ----
    # Add the losses of every intermediate decoder prediction to the weight dict.
    declare_key(mf, "DEEP_SUPERVISION", True)
    # Classification weight of the "no object" class.
    declare_key(mf, "NO_OBJECT_WEIGHT", 0.1)
    # Loss and matching-cost weights.
    declare_key(mf, "CLASS_WEIGHT", 1.0)
    declare_key(mf, "DICE_WEIGHT", 1.0)
    declare_key(mf, "MASK_WEIGHT", 20.0)
    # Point-sampled mask losses: points per mask, oversampling k and importance ratio beta.
    declare_key(mf, "TRAIN_NUM_POINTS", 112 * 112)
    declare_key(mf, "OVERSAMPLE_RATIO", 3.0)
    declare_key(mf, "IMPORTANCE_SAMPLE_RATIO", 0.75)

    # ---- transformers ----
    # Attention heads of the transformer decoder and of the deformable pixel-decoder encoder.
    declare_key(mf, "NHEADS", 8)
    # Dropout of the deformable encoder only (the masked decoder always uses 0.0).
    declare_key(mf, "DROPOUT", 0.1)
    # FFN width of the transformer decoder (the encoder uses
    # SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD).
    declare_key(mf, "DIM_FEEDFORWARD", 2048)
    # Encoder layers of MaskFormer v1's StandardTransformerDecoder (unused by Mask2Former).
    declare_key(mf, "ENC_LAYERS", 0)
    # Decoder layers + 1: the first prediction is made from the learnable queries alone.
    declare_key(mf, "DEC_LAYERS", 6)
    # Pre-norm decoder layers.
    declare_key(mf, "PRE_NORM", False)
    # Decoder width D.
    declare_key(mf, "HIDDEN_DIM", 256)
    # Number of queries Q.
    declare_key(mf, "NUM_OBJECT_QUERIES", 100)
    # What the decoder attends to: "multi_scale_pixel_decoder" (Mask2Former),
    # "transformer_encoder", "pixel_embedding" or a backbone feature name (MaskFormer v1).
    declare_key(mf, "TRANSFORMER_IN_FEATURE", "res5")
    # Always build the decoder's 1x1 input projections, even when CONVS_DIM == HIDDEN_DIM.
    declare_key(mf, "ENFORCE_INPUT_PROJ", False)
    # Registered name (TRANSFORMER_DECODER_REGISTRY) of the transformer decoder:
    # "MultiScaleMaskedTransformerDecoder" (Mask2Former) or "StandardTransformerDecoder" (v1).
    declare_key(mf, "TRANSFORMER_DECODER_NAME", "MultiScaleMaskedTransformerDecoder")
    # Pad the batch to a multiple of this (< 0: use the backbone's size_divisibility).
    declare_key(mf, "SIZE_DIVISIBILITY", 32)

    # ---- inference ----
    test = declare_node(mf, "TEST")
    declare_key(test, "SEMANTIC_ON", True)
    declare_key(test, "INSTANCE_ON", False)
    declare_key(test, "PANOPTIC_ON", False)
    # Panoptic: keep queries whose class score exceeds this.
    declare_key(test, "OBJECT_MASK_THRESHOLD", 0.0)
    # Panoptic: drop a segment whose visible part is below this fraction of its mask.
    declare_key(test, "OVERLAP_THRESHOLD", 0.0)
    # Resize masks to the output size before semantic inference (forced on for panoptic and
    # instance inference).
    declare_key(test, "SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE", False)

    # ---- pixel decoder ----
    head = cfg.MODEL.SEM_SEG_HEAD
    # Width M of the per-pixel mask embeddings.
    declare_key(head, "MASK_DIM", 256)
    # Deformable encoder layers E.
    declare_key(head, "TRANSFORMER_ENC_LAYERS", 0)
    # Registered name (SEM_SEG_HEADS_REGISTRY) of the pixel decoder: "MSDeformAttnPixelDecoder",
    # "FreqAwareMSDeformAttnPixelDecoder2" (= "FreqFusionMSDeformAttnPixelDecoder") or
    # "FreqAwareMSDeformAttnPixelDecoder" (historic v1), or MaskFormer v1's "BasePixelDecoder"
    # (the upstream default) and "TransformerEncoderPixelDecoder".
    declare_key(head, "PIXEL_DECODER_NAME", "BasePixelDecoder")
    # Backbone features fed to the deformable encoder.
    declare_key(head, "DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES", ["res3", "res4", "res5"])
    # Sampling points per head and level of the deformable encoder.
    declare_key(head, "DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS", 4)
    # Legacy: never read upstream; the encoder uses MASK_FORMER.NHEADS (a warning is logged
    # when this differs from it).
    declare_key(head, "DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS", 8)
    # FFN width of the deformable encoder (hard-coded to 1024 upstream; new key).
    declare_key(head, "DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD", 1024)

    # ---- Swin backbone (D2SwinTransformer) ----
    swin = declare_node(cfg.MODEL, "SWIN")
    # Pretraining image size (only sizes the absolute position embedding when APE).
    declare_key(swin, "PRETRAIN_IMG_SIZE", 224)
    declare_key(swin, "PATCH_SIZE", 4)
    declare_key(swin, "EMBED_DIM", 96)
    declare_key(swin, "DEPTHS", [2, 2, 6, 2])
    declare_key(swin, "NUM_HEADS", [3, 6, 12, 24])
    declare_key(swin, "WINDOW_SIZE", 7)
    declare_key(swin, "MLP_RATIO", 4.0)
    declare_key(swin, "QKV_BIAS", True)
    # Attention scale override (None: head_dim ** -0.5).
    declare_key(swin, "QK_SCALE", None)
    declare_key(swin, "DROP_RATE", 0.0)
    declare_key(swin, "ATTN_DROP_RATE", 0.0)
    # Maximum stochastic-depth rate (linearly increasing over blocks).
    declare_key(swin, "DROP_PATH_RATE", 0.3)
    # Absolute position embedding.
    declare_key(swin, "APE", False)
    declare_key(swin, "PATCH_NORM", True)
    declare_key(swin, "OUT_FEATURES", ["res2", "res3", "res4", "res5"])
    # Gradient checkpointing of the Swin blocks (saves memory, costs time).
    declare_key(swin, "USE_CHECKPOINT", False)
