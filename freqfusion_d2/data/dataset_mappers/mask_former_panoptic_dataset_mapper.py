"""Panoptic MaskFormer mapper (``INPUT.DATASET_MAPPER_NAME: mask_former_panoptic``).

The semantic mapper's augmentation and padding, with one training target per non-crowd segment
of the panoptic PNG (as the LSJ mapper). Padding gets panoptic id 0 (void). Training only.
"""

import copy

import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .build import DATASET_MAPPER_REGISTRY
from .mask_former_semantic_dataset_mapper import MaskFormerSemanticDatasetMapper
from .utils import image_to_tensor, masks_to_instances, pad_bottom_right, rgb2id

__all__ = ["MaskFormerPanopticDatasetMapper"]


@DATASET_MAPPER_REGISTRY.register()
class MaskFormerPanopticDatasetMapper(MaskFormerSemanticDatasetMapper):
    """Maps a panoptic dataset dict (``pan_seg_file_name``, ``segments_info`` and optionally
    ``sem_seg_file_name``) to training inputs.

    Output: ``"image"``, ``"sem_seg"`` (only when the dict has a semantic PNG) and
    ``"instances"`` with ``gt_classes`` and ``gt_masks`` (N, H, W) bool.
    """

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.img_format)
        utils.check_image_size(dataset_dict, image)
        sem_seg = self._read_sem_seg(dataset_dict) if "sem_seg_file_name" in dataset_dict else None
        if "pan_seg_file_name" not in dataset_dict:
            raise ValueError(
                f"dataset_dict: no 'pan_seg_file_name' for image {dataset_dict['file_name']}"
            )
        pan_seg = utils.read_image(dataset_dict.pop("pan_seg_file_name"), "RGB")

        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = T.AugmentationList(self.tfm_gens)(aug_input)
        pan_seg = torch.as_tensor(rgb2id(transforms.apply_segmentation(pan_seg)))

        image = image_to_tensor(aug_input.image)
        if sem_seg is not None:
            sem_seg = torch.as_tensor(aug_input.sem_seg.astype("long"))
        if self.size_divisibility > 0:
            image = pad_bottom_right(image, self.size_divisibility, 128)
            pan_seg = pad_bottom_right(pan_seg, self.size_divisibility, 0)
            if sem_seg is not None:
                sem_seg = pad_bottom_right(sem_seg, self.size_divisibility, self.ignore_label)
        dataset_dict["image"] = image
        if sem_seg is not None:
            dataset_dict["sem_seg"] = sem_seg

        if "annotations" in dataset_dict:
            raise ValueError(
                "dataset_dict: a panoptic-segmentation dict must not have 'annotations'"
            )

        pan_seg = pan_seg.numpy()
        segments = [s for s in dataset_dict["segments_info"] if not s["iscrowd"]]
        dataset_dict["instances"] = masks_to_instances(
            tuple(pan_seg.shape),
            [s["category_id"] for s in segments],
            [pan_seg == s["id"] for s in segments],
        )
        return dataset_dict
