"""The ``MaskFormer`` meta-architecture (Mask2Former): backbone, ``MaskFormerHead``, set
criterion, and semantic / panoptic / instance inference."""

import logging
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone, build_sem_seg_head
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks, Boxes, ImageList, Instances
from detectron2.utils.memory import retry_if_cuda_oom
from torch import nn

from ..sfm_config import make_msau

logger = logging.getLogger(__name__)

__all__ = ["MaskFormer"]


def build_criterion(cfg, num_classes: int, mask_point_sampler=None):
    """The Hungarian matcher and set criterion of Mask2Former, with their weight dict
    (``mask_point_sampler``: see ``SetCriterion``)."""
    # Imported here so that the model definitions import without the training pieces.
    from ..criterion import SetCriterion
    from ..matcher import HungarianMatcher

    mf = cfg.MODEL.MASK_FORMER
    matcher = HungarianMatcher(
        cost_class=mf.CLASS_WEIGHT,
        cost_mask=mf.MASK_WEIGHT,
        cost_dice=mf.DICE_WEIGHT,
        num_points=mf.TRAIN_NUM_POINTS,
    )
    weight_dict = {
        "loss_ce": mf.CLASS_WEIGHT,
        "loss_mask": mf.MASK_WEIGHT,
        "loss_dice": mf.DICE_WEIGHT,
    }
    if mf.DEEP_SUPERVISION:
        aux = {}
        for i in range(mf.DEC_LAYERS - 1):
            aux.update({f"{k}_{i}": v for k, v in weight_dict.items()})
        weight_dict.update(aux)
    return SetCriterion(
        num_classes,
        matcher=matcher,
        weight_dict=weight_dict,
        eos_coef=mf.NO_OBJECT_WEIGHT,
        losses=["labels", "masks"],
        num_points=mf.TRAIN_NUM_POINTS,
        oversample_ratio=mf.OVERSAMPLE_RATIO,
        importance_sample_ratio=mf.IMPORTANCE_SAMPLE_RATIO,
        mask_point_sampler=mask_point_sampler,
    )


@META_ARCH_REGISTRY.register()
class MaskFormer(nn.Module):
    """Mask2Former: mask classification with a masked-attention transformer decoder.

    Input: a list of dicts with ``image`` (C, H, W) in ``INPUT.FORMAT`` order and, for training,
    ``instances`` (``gt_classes``, ``gt_masks``); optional ``height`` / ``width`` give the output
    size at inference. Training returns the weighted loss dict; inference returns, per image, a
    dict with ``sem_seg`` (K, height, width), ``panoptic_seg`` ((height, width) int32 ids, segment
    infos) and ``instances`` as enabled.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        criterion: nn.Module,
        num_queries: int,
        object_mask_threshold: float,
        overlap_threshold: float,
        metadata,
        size_divisibility: int,
        sem_seg_postprocess_before_inference: bool,
        pixel_mean: Tuple[float],
        pixel_std: Tuple[float],
        semantic_on: bool,
        panoptic_on: bool,
        instance_on: bool,
        test_topk_per_image: int,
        deep_supervision: bool = True,
        mask_upsampler: Optional[nn.Module] = None,
    ):
        """
        Args:
            backbone: the backbone.
            sem_seg_head: a ``MaskFormerHead``.
            criterion: the set criterion; its ``weight_dict`` selects and weights the losses.
            num_queries: Q (the decoder's own count is used at inference).
            object_mask_threshold: panoptic: minimum class score of a kept query.
            overlap_threshold: panoptic: minimum visible fraction of a kept mask.
            metadata: dataset metadata; ``thing_dataset_id_to_contiguous_id`` marks the thing
                classes for panoptic and instance inference.
            size_divisibility: pad the batch to a multiple of this (< 0: the backbone's).
            sem_seg_postprocess_before_inference: resize mask logits to the output size before
                inference (needed by panoptic and instance inference).
            pixel_mean, pixel_std: per-channel normalisation.
            semantic_on, panoptic_on, instance_on: which outputs to produce.
            test_topk_per_image: instance inference: detections per image (at most Q * K).
            deep_supervision: pass the intermediate predictions to the criterion; without it
                they are not matched at all (the losses are the same as computing and dropping
                them).
            mask_upsampler: upsampler of the mask logits at inference, called as
                ``mask_upsampler(masks, size)`` (an SFM
                :class:`~freqfusion_d2.layers.MultiScaleAdaptiveUpsampler`); None: bilinear.
                Give the criterion its ``point_sample`` so that it is trained.
        """
        super().__init__()
        if not semantic_on and not sem_seg_postprocess_before_inference:
            raise ValueError(
                "MaskFormer: sem_seg_postprocess_before_inference must be True unless "
                "semantic_on (panoptic and instance inference need resized masks)"
            )
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.num_queries = num_queries
        self.overlap_threshold = overlap_threshold
        self.object_mask_threshold = object_mask_threshold
        self.metadata = metadata
        if size_divisibility < 0:
            size_divisibility = self.backbone.size_divisibility
        self.size_divisibility = size_divisibility
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.semantic_on = semantic_on
        self.instance_on = instance_on
        self.panoptic_on = panoptic_on
        self.test_topk_per_image = test_topk_per_image
        self.deep_supervision = deep_supervision
        self.mask_upsampler = mask_upsampler

    @classmethod
    def from_config(cls, cfg):
        mf = cfg.MODEL.MASK_FORMER
        backbone = build_backbone(cfg)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())
        test = mf.TEST
        train_sets = cfg.DATASETS.TRAIN
        mask_upsampler = make_msau(cfg) if cfg.MODEL.SFM.MSAU else None
        sampler = mask_upsampler.point_sample if mask_upsampler is not None else None
        return {
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "criterion": build_criterion(cfg, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, sampler),
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "object_mask_threshold": test.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": test.OVERLAP_THRESHOLD,
            "metadata": MetadataCatalog.get(train_sets[0]) if len(train_sets) else None,
            "size_divisibility": mf.SIZE_DIVISIBILITY,
            "sem_seg_postprocess_before_inference": (
                test.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE or test.PANOPTIC_ON or test.INSTANCE_ON
            ),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "semantic_on": test.SEMANTIC_ON,
            "instance_on": test.INSTANCE_ON,
            "panoptic_on": test.PANOPTIC_ON,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "deep_supervision": mf.DEEP_SUPERVISION,
            "mask_upsampler": mask_upsampler,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # Checkpoints written without the criterion lack its (persistent) class weights; fill
        # them from the config so that strict loading works for both kinds of file.
        key = prefix + "criterion.empty_weight"
        weight = getattr(self.criterion, "empty_weight", None)
        if key not in state_dict and isinstance(weight, torch.Tensor):
            logger.info("The checkpoint has no %s; using the configured class weights.", key)
            state_dict[key] = weight.detach().clone()
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def preprocess_image(self, batched_inputs: List[Dict[str, object]]) -> ImageList:
        """Normalised images of a batch, zero-padded to a multiple of ``size_divisibility``."""
        images = [x["image"].to(self.device) for x in batched_inputs]
        images = [(x - self.pixel_mean) / self.pixel_std for x in images]
        return ImageList.from_tensors(images, self.size_divisibility)

    def forward(self, batched_inputs: List[Dict[str, object]]):
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        outputs = self.run_head(features, images)

        if self.training:
            if "instances" in batched_inputs[0]:
                gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
                targets = self.prepare_targets(gt_instances, images)
            else:
                targets = None
            if not self.deep_supervision:
                outputs = {k: v for k, v in outputs.items() if k != "aux_outputs"}
            losses = self.criterion(outputs, targets)
            weight_dict = self.criterion.weight_dict
            # Losses without a weight are dropped, as upstream.
            return {k: v * weight_dict[k] for k, v in losses.items() if k in weight_dict}
        return self.inference(outputs, batched_inputs, images)

    def run_head(self, features: Dict[str, torch.Tensor], images: ImageList):
        """The head's prediction dict for the backbone ``features`` of the batch ``images``."""
        return self.sem_seg_head(features)

    def inference(self, outputs, batched_inputs, images: ImageList) -> List[Dict[str, object]]:
        """Post-processes the decoder outputs of a padded batch into per-image results."""
        mask_cls_results = outputs["pred_logits"]
        if self.mask_upsampler is not None:
            mask_pred_results = self.mask_upsampler(
                outputs["pred_masks"], tuple(images.tensor.shape[-2:])
            )
        else:
            mask_pred_results = F.interpolate(
                outputs["pred_masks"],
                size=images.tensor.shape[-2:],
                mode="bilinear",
                align_corners=False,
            )
        del outputs
        processed_results = []
        for mask_cls, mask_pred, input_per_image, image_size in zip(
            mask_cls_results, mask_pred_results, batched_inputs, images.image_sizes
        ):
            height = input_per_image.get("height", image_size[0])
            width = input_per_image.get("width", image_size[1])
            result = {}
            if self.sem_seg_postprocess_before_inference:
                mask_pred = retry_if_cuda_oom(sem_seg_postprocess)(
                    mask_pred, image_size, height, width
                )
                mask_cls = mask_cls.to(mask_pred)
            if self.semantic_on:
                r = retry_if_cuda_oom(self.semantic_inference)(mask_cls, mask_pred)
                if not self.sem_seg_postprocess_before_inference:
                    r = retry_if_cuda_oom(sem_seg_postprocess)(r, image_size, height, width)
                result["sem_seg"] = r
            if self.panoptic_on:
                result["panoptic_seg"] = retry_if_cuda_oom(self.panoptic_inference)(
                    mask_cls, mask_pred
                )
            if self.instance_on:
                result["instances"] = retry_if_cuda_oom(self.instance_inference)(
                    mask_cls, mask_pred
                )
            processed_results.append(result)
        return processed_results

    def prepare_targets(self, targets: List[Instances], images: ImageList) -> List[Dict]:
        """Per image: ``labels`` (N,) and ``masks`` (N, H_pad, W_pad) zero-padded to the batch."""
        h_pad, w_pad = images.tensor.shape[-2:]
        new_targets = []
        for t in targets:
            gt_masks = t.gt_masks
            if isinstance(gt_masks, BitMasks):
                gt_masks = gt_masks.tensor
            padded = gt_masks.new_zeros((gt_masks.shape[0], h_pad, w_pad))
            padded[:, : gt_masks.shape[1], : gt_masks.shape[2]] = gt_masks
            new_targets.append({"labels": t.gt_classes, "masks": padded})
        return new_targets

    def _thing_ids(self) -> set:
        mapping = getattr(self.metadata, "thing_dataset_id_to_contiguous_id", None) or {}
        return set(int(v) for v in mapping.values())

    def semantic_inference(self, mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> torch.Tensor:
        """(K, H, W) scores: sum over queries of class probability times mask probability."""
        mask_cls = F.softmax(mask_cls, dim=-1)[..., :-1]
        return torch.einsum("qc,qhw->chw", mask_cls, mask_pred.sigmoid())

    def panoptic_inference(self, mask_cls: torch.Tensor, mask_pred: torch.Tensor):
        """(panoptic id map (H, W) int32, segment infos); 0 is void, ids start at 1."""
        num_classes = self.sem_seg_head.num_classes
        scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
        mask_pred = mask_pred.sigmoid()
        keep = labels.ne(num_classes) & (scores > self.object_mask_threshold)
        cur_scores = scores[keep]
        cur_classes = labels[keep]
        cur_masks = mask_pred[keep]
        cur_prob_masks = cur_scores.view(-1, 1, 1) * cur_masks
        h, w = cur_masks.shape[-2:]
        panoptic_seg = torch.zeros((h, w), dtype=torch.int32, device=cur_masks.device)
        segments_info = []
        if cur_masks.shape[0] == 0:
            return panoptic_seg, segments_info
        thing_ids = self._thing_ids()
        cur_mask_ids = cur_prob_masks.argmax(0)
        current_segment_id = 0
        stuff_memory = {}
        for k in range(cur_classes.shape[0]):
            pred_class = int(cur_classes[k].item())
            isthing = pred_class in thing_ids
            is_k = cur_mask_ids == k
            mask_area = is_k.sum().item()
            original_area = (cur_masks[k] >= 0.5).sum().item()
            mask = is_k & (cur_masks[k] >= 0.5)
            if mask_area > 0 and original_area > 0 and mask.sum().item() > 0:
                if mask_area / original_area < self.overlap_threshold:
                    continue
                if not isthing:
                    # All segments of a stuff class merge into its first one.
                    if pred_class in stuff_memory:
                        panoptic_seg[mask] = stuff_memory[pred_class]
                        continue
                    stuff_memory[pred_class] = current_segment_id + 1
                current_segment_id += 1
                panoptic_seg[mask] = current_segment_id
                segments_info.append(
                    {"id": current_segment_id, "isthing": isthing, "category_id": pred_class}
                )
        return panoptic_seg, segments_info

    def instance_inference(self, mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> Instances:
        """Top-k (query, class) pairs as instances with binary masks and zero boxes.

        k is ``test_topk_per_image`` clamped to Q * K (upstream raises when it is larger); the
        order of the detections is unspecified.
        """
        image_size = mask_pred.shape[-2:]
        num_classes = self.sem_seg_head.num_classes
        num_queries = mask_cls.shape[0]
        scores = F.softmax(mask_cls, dim=-1)[:, :-1]
        labels = torch.arange(num_classes, device=mask_cls.device).repeat(num_queries)
        k = min(self.test_topk_per_image, num_queries * num_classes)
        scores_per_image, topk_indices = scores.flatten(0, 1).topk(k, sorted=False)
        labels_per_image = labels[topk_indices]
        mask_pred = mask_pred[topk_indices // num_classes]
        if self.panoptic_on:
            thing_ids = self._thing_ids()
            keep = torch.tensor(
                [int(lab) in thing_ids for lab in labels_per_image.tolist()],
                dtype=torch.bool,
                device=labels_per_image.device,
            )
            scores_per_image = scores_per_image[keep]
            labels_per_image = labels_per_image[keep]
            mask_pred = mask_pred[keep]
        result = Instances(image_size)
        pred_masks = (mask_pred > 0).float()
        result.pred_masks = pred_masks
        result.pred_boxes = Boxes(torch.zeros(mask_pred.size(0), 4, device=mask_pred.device))
        mask_scores = (mask_pred.sigmoid().flatten(1) * pred_masks.flatten(1)).sum(1) / (
            pred_masks.flatten(1).sum(1) + 1e-6
        )
        result.scores = scores_per_image * mask_scores
        result.pred_classes = labels_per_image
        return result
