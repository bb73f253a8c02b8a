"""COCO panoptic large-scale-jitter mapper (``INPUT.DATASET_MAPPER_NAME: coco_panoptic_lsj``).

Upstream: ``COCOPanopticNewBaselineDatasetMapper`` and ``build_transform_gen`` in
github.com/facebookresearch/Mask2Former
``mask2former/data/dataset_mappers/coco_panoptic_new_baseline_dataset_mapper.py``.

One training target per non-crowd segment, things and stuff alike; crowd segments are dropped,
so their pixels are negatives for every mask.
"""

from detectron2.data import detection_utils as utils

from .build import DATASET_MAPPER_REGISTRY
from .lsj_dataset_mapper import LSJDatasetMapperBase
from .utils import masks_to_instances, rgb2id

__all__ = ["COCOPanopticNewBaselineDatasetMapper"]


@DATASET_MAPPER_REGISTRY.register()
class COCOPanopticNewBaselineDatasetMapper(LSJDatasetMapperBase):
    """Maps a COCO panoptic dataset dict to Mask2Former training inputs.

    Output: ``"image"`` uint8 (3, S, S) with S = ``INPUT.IMAGE_SIZE`` (128 in the padding) and
    ``"instances"`` with ``gt_classes`` (contiguous ids from ``segments_info``), ``gt_masks``
    (N, S, S) bool and ``gt_boxes``. With ``is_train=False`` only the image is returned.
    """

    def _add_targets(self, dataset_dict, transforms, original_shape, image_shape):
        if "pan_seg_file_name" in dataset_dict:
            pan_seg = utils.read_image(dataset_dict.pop("pan_seg_file_name"), "RGB")
            # Nearest resize; the crop pads with (255, 255, 255), an id that matches no segment.
            pan_seg = rgb2id(transforms.apply_segmentation(pan_seg))
            segments = [s for s in dataset_dict["segments_info"] if not s["iscrowd"]]
            dataset_dict["instances"] = masks_to_instances(
                image_shape,
                [s["category_id"] for s in segments],
                [pan_seg == s["id"] for s in segments],
                with_boxes=True,
            )
