"""Training augmentation lists of the Mask2Former mappers.

They follow upstream's mappers in ``mask2former/data/dataset_mappers/`` of
github.com/facebookresearch/Mask2Former (``build_transform_gen`` of the LSJ mappers and the
``from_config`` of the MaskFormer mappers).

One function per recipe; the mappers' ``from_config`` and the tests share them.
"""

from typing import List

from detectron2.config import CfgNode
from detectron2.data import transforms as T

__all__ = [
    "build_lsj_augmentation",
    "build_semantic_augmentation",
    "build_instance_augmentation",
]


def _require_train(is_train: bool, recipe: str) -> None:
    if not is_train:
        raise ValueError(
            f"is_train: the {recipe} augmentation is for training only; evaluation uses "
            "detectron2's DatasetMapper (resize to INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST)"
        )


def _color_aug_ssd(cfg: CfgNode) -> T.Augmentation:
    # Imported here so that the photometric augmentation is only required when enabled.
    from detectron2.projects.point_rend import ColorAugSSDTransform

    return ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT)


def build_lsj_augmentation(cfg: CfgNode, is_train: bool = True) -> List[T.Augmentation]:
    """Large-scale jitter of the COCO "new baseline" mappers, in this order.

    1. Horizontal or vertical flip (``INPUT.RANDOM_FLIP``, unless "none"); before the resize.
    2. ``ResizeScale``: scale r ~ U(``INPUT.MIN_SCALE``, ``INPUT.MAX_SCALE``) of an
       ``INPUT.IMAGE_SIZE`` square target, keeping the aspect ratio.
    3. ``FixedSizeCrop`` to ``IMAGE_SIZE`` squared: random crop, then bottom-right padding with
       128 (image) and 255 (segmentation).
    """
    _require_train(is_train, "large-scale-jitter")
    size = cfg.INPUT.IMAGE_SIZE
    augs: List[T.Augmentation] = []
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(
            T.RandomFlip(
                horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
            )
        )
    augs.append(
        T.ResizeScale(
            min_scale=cfg.INPUT.MIN_SCALE,
            max_scale=cfg.INPUT.MAX_SCALE,
            target_height=size,
            target_width=size,
        )
    )
    augs.append(T.FixedSizeCrop(crop_size=(size, size)))
    return augs


def build_semantic_augmentation(cfg: CfgNode, is_train: bool = True) -> List[T.Augmentation]:
    """Augmentation of the semantic (and panoptic) MaskFormer mappers, in this order.

    1. ``ResizeShortestEdge(INPUT.MIN_SIZE_TRAIN, INPUT.MAX_SIZE_TRAIN,
       INPUT.MIN_SIZE_TRAIN_SAMPLING)``.
    2. If ``INPUT.CROP.ENABLED``: ``RandomCrop_CategoryAreaConstraint`` of ``INPUT.CROP.TYPE`` /
       ``SIZE`` with ``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA``, ignoring
       ``MODEL.SEM_SEG_HEAD.IGNORE_VALUE``.
    3. If ``INPUT.COLOR_AUG_SSD``: SSD photometric distortion.
    4. Horizontal flip with probability 0.5.
    """
    _require_train(is_train, "semantic")
    augs: List[T.Augmentation] = [
        T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
    ]
    if cfg.INPUT.CROP.ENABLED:
        augs.append(
            T.RandomCrop_CategoryAreaConstraint(
                cfg.INPUT.CROP.TYPE,
                cfg.INPUT.CROP.SIZE,
                cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            )
        )
    if cfg.INPUT.COLOR_AUG_SSD:
        augs.append(_color_aug_ssd(cfg))
    augs.append(T.RandomFlip())
    return augs


def build_instance_augmentation(cfg: CfgNode, is_train: bool = True) -> List[T.Augmentation]:
    """Augmentation of the instance MaskFormer mapper: as the semantic one, but with a plain
    ``RandomCrop(INPUT.CROP.TYPE, INPUT.CROP.SIZE)`` (no category-area constraint)."""
    _require_train(is_train, "instance")
    augs: List[T.Augmentation] = [
        T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
    ]
    if cfg.INPUT.CROP.ENABLED:
        augs.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    if cfg.INPUT.COLOR_AUG_SSD:
        augs.append(_color_aug_ssd(cfg))
    augs.append(T.RandomFlip())
    return augs
