"""COCO instance large-scale-jitter mapper (``INPUT.DATASET_MAPPER_NAME: coco_instance_lsj``).

Same augmentation as the panoptic LSJ mapper; targets come from the instance annotations.
Crowd annotations are dropped, and so are instances left empty by the crop.
"""

from .build import DATASET_MAPPER_REGISTRY
from .lsj_dataset_mapper import LSJDatasetMapperBase
from .utils import masks_to_instances, transformed_instance_masks

__all__ = ["COCOInstanceNewBaselineDatasetMapper"]


@DATASET_MAPPER_REGISTRY.register()
class COCOInstanceNewBaselineDatasetMapper(LSJDatasetMapperBase):
    """Maps a COCO instance dataset dict to Mask2Former training inputs.

    Output: ``"image"`` uint8 (3, S, S) and ``"instances"`` with ``gt_classes``, ``gt_masks``
    (N, S, S) bool and ``gt_boxes`` computed from the masks. With ``is_train=False`` only the
    image is returned.
    """

    def _add_targets(self, dataset_dict, transforms, original_shape, image_shape):
        if "annotations" in dataset_dict:
            classes, masks = transformed_instance_masks(
                dataset_dict.pop("annotations"), transforms, *original_shape
            )
            # Instances the crop removed entirely are dropped.
            keep = [i for i, mask in enumerate(masks) if mask.any()]
            dataset_dict["instances"] = masks_to_instances(
                image_shape, [classes[i] for i in keep], [masks[i] for i in keep], with_boxes=True
            )
