"""Small helpers shared by the Mask2Former dataset mappers."""

from typing import List, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks, Boxes, Instances, polygons_to_bitmask

# One decoder of COCO panoptic PNG colours for the whole data package.
from ..panoptic_conversion import rgb_to_id as rgb2id

__all__ = [
    "rgb2id",
    "image_to_tensor",
    "pad_bottom_right",
    "masks_to_instances",
    "segmentation_to_mask",
    "transformed_instance_masks",
]


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) array to a contiguous (C, H, W) tensor of the same dtype."""
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def pad_bottom_right(tensor: torch.Tensor, size: int, value: float) -> torch.Tensor:
    """Pads (or, for a larger input, crops) the last two dims to exactly ``size`` x ``size``.

    This is the mappers' ``INPUT.SIZE_DIVISIBILITY`` behaviour: a fixed square size, not a
    multiple (a negative pad crops, as upstream).
    """
    height, width = tensor.shape[-2:]
    return F.pad(tensor, [0, size - width, 0, size - height], value=value).contiguous()


def masks_to_instances(
    image_shape: Tuple[int, int],
    classes: Sequence[int],
    masks: List[np.ndarray],
    with_boxes: bool = False,
) -> Instances:
    """Builds the training targets: ``gt_classes`` (N,) int64 and ``gt_masks`` (N, H, W).

    ``gt_masks`` is bool, or float32 zeros of shape (0, H, W) when there is no mask. With
    ``with_boxes``, ``gt_boxes`` are the tight boxes of the masks (unused by Mask2Former).
    """
    instances = Instances(image_shape)
    instances.gt_classes = torch.tensor(np.asarray(classes), dtype=torch.int64).reshape(-1)
    if len(masks) == 0:
        instances.gt_masks = torch.zeros((0, *image_shape))
        if with_boxes:
            instances.gt_boxes = Boxes(torch.zeros((0, 4)))
        return instances
    bitmasks = BitMasks(torch.stack([torch.from_numpy(np.ascontiguousarray(m)) for m in masks]))
    instances.gt_masks = bitmasks.tensor
    if with_boxes:
        instances.gt_boxes = bitmasks.get_bounding_boxes()
    return instances


def segmentation_to_mask(segm, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, RLE dict or binary array) as an (H, W) bool array."""
    if isinstance(segm, list):
        return polygons_to_bitmask(segm, height, width)
    if isinstance(segm, dict):
        if isinstance(segm.get("counts"), list):
            segm = mask_util.frPyObjects(segm, height, width)
        return mask_util.decode(segm).astype(bool)
    if isinstance(segm, np.ndarray):
        if segm.ndim != 2:
            raise ValueError(f"segmentation: expected a 2-D mask array, got {segm.ndim} dims")
        return segm.astype(bool)
    raise ValueError(
        "segmentation: expected polygons (list), a COCO RLE (dict) or a 2-D array, "
        f"got {type(segm)}"
    )


def transformed_instance_masks(
    annotations: List[dict], transforms, height: int, width: int
) -> Tuple[List[int], List[np.ndarray]]:
    """Classes and augmented bool masks of the non-crowd instance annotations.

    Each segmentation is rasterized at the original ``height`` x ``width`` and then goes through
    ``transforms.apply_segmentation`` (nearest resize, crop, flip, ...). Rasterizing first avoids
    the polygon clipping of crop transforms, which would need ``shapely``. Pixels a transform
    pads are not part of the mask (segmentation padding is 255, not 1).
    """
    classes, masks = [], []
    for obj in annotations:
        if obj.get("iscrowd", 0) != 0:
            continue
        mask = segmentation_to_mask(obj["segmentation"], height, width).astype(np.uint8)
        classes.append(int(obj["category_id"]))
        masks.append(transforms.apply_segmentation(mask) == 1)
    return classes, masks
