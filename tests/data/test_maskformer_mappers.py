"""Mask2Former dataset mappers on small images and PNGs generated on disk."""

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetMapper, MetadataCatalog
from PIL import Image

from freqfusion_d2 import add_maskformer2_config
from freqfusion_d2.data.dataset_mappers import (
    DATASET_MAPPER_REGISTRY,
    MAPPER_NAME_ALIASES,
    COCOInstanceNewBaselineDatasetMapper,
    COCOPanopticNewBaselineDatasetMapper,
    MaskFormerInstanceDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
    build_train_mapper,
)
from freqfusion_d2.data.dataset_mappers.utils import rgb2id

H, W = 20, 30
TRAIN_SET = "freqfusion_d2_test_mappers_train"


def _cfg(mapper_name):
    """detectron2 defaults plus the Mask2Former keys, small sizes and deterministic choices."""
    cfg = get_cfg()
    add_maskformer2_config(cfg)
    cfg.INPUT.DATASET_MAPPER_NAME = mapper_name
    cfg.INPUT.IMAGE_SIZE = 32
    cfg.INPUT.MIN_SCALE = 0.5
    cfg.INPUT.MAX_SCALE = 0.5
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.INPUT.FORMAT = "RGB"
    cfg.DATASETS.TRAIN = (TRAIN_SET,)
    MetadataCatalog.get(TRAIN_SET).set(ignore_label=255)
    return cfg


def _id_to_rgb(ids):
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


@pytest.fixture
def panoptic_sample(tmp_path):
    """A 20x30 image; panoptic PNG with a thing (id 300, class 0) in rows 0-9 / cols 0-9, stuff
    (id 70000, class 100) in rows 10-19, a crowd thing (id 5, class 2) in rows 0-9 / cols 20-29,
    void (0) elsewhere; semantic PNG with the classes (crowd kept) and 255 for void."""
    image = np.random.RandomState(0).randint(0, 256, (H, W, 3)).astype(np.uint8)
    ids = np.zeros((H, W), dtype=np.int64)
    ids[:10, :10] = 300
    ids[10:, :] = 70000
    ids[:10, 20:] = 5
    semantic = np.full((H, W), 255, dtype=np.uint8)
    semantic[:10, :10] = 0
    semantic[10:, :] = 100
    semantic[:10, 20:] = 2
    Image.fromarray(image).save(tmp_path / "img.jpg", quality=100)
    Image.fromarray(_id_to_rgb(ids)).save(tmp_path / "pan.png")
    Image.fromarray(semantic).save(tmp_path / "sem.png")
    record = {
        "file_name": str(tmp_path / "img.jpg"),
        "image_id": 1,
        "height": H,
        "width": W,
        "pan_seg_file_name": str(tmp_path / "pan.png"),
        "segments_info": [
            {"id": 300, "category_id": 0, "iscrowd": 0, "isthing": True},
            {"id": 70000, "category_id": 100, "iscrowd": 0, "isthing": False},
            {"id": 5, "category_id": 2, "iscrowd": 1, "isthing": True},
        ],
    }
    return record, ids, semantic, str(tmp_path / "sem.png")


def test_rgb2id_round_trip():
    ids = np.array([[0, 1, 256], [65536, 70000, 16777215]])
    assert np.array_equal(rgb2id(_id_to_rgb(ids)), ids)
    with pytest.raises(ValueError, match="color"):
        rgb2id(np.zeros((4, 4)))


def test_panoptic_lsj_targets_without_augmentation(panoptic_sample):
    record, ids, _, _ = panoptic_sample
    out = COCOPanopticNewBaselineDatasetMapper(True, tfm_gens=[], image_format="RGB")(record)
    assert out["image"].shape == (3, H, W) and out["image"].dtype == torch.uint8
    inst = out["instances"]
    # The crowd segment is dropped; its pixels are negatives of every mask.
    assert inst.gt_classes.tolist() == [0, 100]
    assert inst.gt_masks.dtype == torch.bool and inst.gt_masks.shape == (2, H, W)
    assert torch.equal(inst.gt_masks[0], torch.from_numpy(ids == 300))
    assert torch.equal(inst.gt_masks[1], torch.from_numpy(ids == 70000))
    assert not inst.gt_masks[:, :10, 20:].any()
    # Tight boxes (x0, y0, x1, y1) of the masks.
    assert inst.gt_boxes.tensor.tolist() == [[0, 0, 10, 10], [0, 10, 30, 20]]
    assert "pan_seg_file_name" not in out


def test_panoptic_lsj_from_config_resize_and_pad(panoptic_sample):
    record, _, _, _ = panoptic_sample
    cfg = _cfg("coco_panoptic_lsj")
    mapper = build_train_mapper(cfg)
    assert isinstance(mapper, COCOPanopticNewBaselineDatasetMapper)
    out = mapper(record)
    # Scale r = 0.5 of a 32x32 target: min(16 / 20, 16 / 30) = 0.5333 -> round(10.67) = 11 rows,
    # 16 columns; the fixed-size crop then pads bottom-right to 32x32 with 128.
    assert out["image"].shape == (3, 32, 32)
    assert (out["image"][:, 11:, :] == 128).all() and (out["image"][:, :, 16:] == 128).all()
    masks = out["instances"].gt_masks
    assert masks.shape == (2, 32, 32)
    # Padding has segmentation value 255 (id 16777215): in no mask.
    assert not masks[:, 11:, :].any() and not masks[:, :, 16:].any()
    assert masks[0, :5, :5].all() and masks[1, 6:11, :16].all()


def test_panoptic_lsj_is_training_only():
    with pytest.raises(ValueError, match="is_train"):
        COCOPanopticNewBaselineDatasetMapper(_cfg("coco_panoptic_lsj"), is_train=False)


def test_semantic_mapper_targets_and_fixed_size_padding(panoptic_sample):
    record, _, semantic, sem_path = panoptic_sample
    record = {
        "file_name": record["file_name"],
        "height": H,
        "width": W,
        "sem_seg_file_name": sem_path,
    }
    mapper = MaskFormerSemanticDatasetMapper(
        True, augmentations=[], image_format="RGB", ignore_label=255, size_divisibility=32
    )
    out = mapper(record)
    # Padded to exactly 32x32: image with 128, label with the ignore value.
    assert out["image"].shape == (3, 32, 32)
    assert (out["image"][:, H:, :] == 128).all() and (out["image"][:, :, W:] == 128).all()
    assert out["sem_seg"].dtype == torch.int64 and out["sem_seg"].shape == (32, 32)
    assert torch.equal(out["sem_seg"][:H, :W], torch.from_numpy(semantic).long())
    assert (out["sem_seg"][H:, :] == 255).all() and (out["sem_seg"][:, W:] == 255).all()
    # One target per class present, ascending; 255 excluded; the crowd class is a plain class.
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [0, 2, 100]
    assert inst.image_size == (32, 32) and inst.gt_masks.dtype == torch.bool
    for mask, c in zip(inst.gt_masks, [0, 2, 100]):
        assert torch.equal(mask, out["sem_seg"] == c)


def test_semantic_mapper_all_ignored_gives_empty_targets(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "a_sem.png")
    mapper = MaskFormerSemanticDatasetMapper(
        True, augmentations=[], image_format="RGB", ignore_label=255, size_divisibility=-1
    )
    out = mapper(
        {"file_name": str(tmp_path / "a.png"), "sem_seg_file_name": str(tmp_path / "a_sem.png")}
    )
    assert out["instances"].gt_classes.numel() == 0
    assert out["instances"].gt_masks.shape == (0, 8, 8)


def test_semantic_mapper_from_config_crop(panoptic_sample):
    record, _, _, sem_path = panoptic_sample
    record = {"file_name": record["file_name"], "sem_seg_file_name": sem_path}
    cfg = _cfg("mask_former_semantic")
    cfg.INPUT.MIN_SIZE_TRAIN = (20,)
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = (16, 16)
    cfg.INPUT.COLOR_AUG_SSD = True
    mapper = build_train_mapper(cfg)
    assert isinstance(mapper, MaskFormerSemanticDatasetMapper)
    assert mapper.ignore_label == 255  # from the training set's metadata
    out = mapper(record)
    assert out["image"].shape == (3, 16, 16) and out["sem_seg"].shape == (16, 16)
    classes = out["instances"].gt_classes.tolist()
    assert classes == sorted(set(out["sem_seg"].unique().tolist()) - {255})
    with pytest.raises(ValueError, match="is_train"):
        MaskFormerSemanticDatasetMapper(cfg, is_train=False)


def test_panoptic_mapper(panoptic_sample):
    record, ids, semantic, sem_path = panoptic_sample
    record = dict(record, sem_seg_file_name=sem_path)
    mapper = MaskFormerPanopticDatasetMapper(
        True, augmentations=[], image_format="RGB", ignore_label=255, size_divisibility=32
    )
    out = mapper(record)
    assert out["image"].shape == (3, 32, 32)
    assert torch.equal(out["sem_seg"][:H, :W], torch.from_numpy(semantic).long())
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [0, 100]
    assert inst.gt_masks.shape == (2, 32, 32)
    assert torch.equal(inst.gt_masks[1, :H, :W], torch.from_numpy(ids == 70000))
    assert not inst.gt_masks[:, H:, :].any() and not inst.gt_masks[:, :, W:].any()


def _instance_record(tmp_path):
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "inst.png")
    rle_mask = np.zeros((H, W), dtype=np.uint8, order="F")
    rle_mask[12:18, 2:8] = 1
    import pycocotools.mask as mask_util

    rle = mask_util.encode(rle_mask)
    rle["counts"] = rle["counts"].decode("ascii")
    return {
        "file_name": str(tmp_path / "inst.png"),
        "height": H,
        "width": W,
        "annotations": [
            # A polygon covering rows 0-9, columns 0-9 (box corners at pixel edges).
            {
                "bbox": [0, 0, 10, 10],
                "bbox_mode": 1,
                "category_id": 3,
                "iscrowd": 0,
                "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]],
            },
            {
                "bbox": [2, 12, 6, 6],
                "bbox_mode": 1,
                "category_id": 7,
                "iscrowd": 0,
                "segmentation": rle,
            },
            {
                "bbox": [20, 0, 5, 5],
                "bbox_mode": 1,
                "category_id": 1,
                "iscrowd": 1,
                "segmentation": [[20, 0, 25, 0, 25, 5, 20, 5]],
            },
        ],
    }


def test_instance_mapper(tmp_path):
    record = _instance_record(tmp_path)
    mapper = MaskFormerInstanceDatasetMapper(
        True, augmentations=[], image_format="RGB", size_divisibility=32
    )
    out = mapper(record)
    inst = out["instances"]
    assert out["image"].shape == (3, 32, 32) and inst.image_size == (32, 32)
    assert inst.gt_classes.tolist() == [3, 7]  # crowd dropped
    assert inst.gt_masks.dtype == torch.bool and inst.gt_masks.shape == (2, 32, 32)
    assert inst.gt_masks[0].sum() == 100 and inst.gt_masks[0, :10, :10].all()
    assert inst.gt_masks[1].sum() == 36 and inst.gt_masks[1, 12:18, 2:8].all()
    assert isinstance(
        build_train_mapper(_cfg("mask_former_instance")), MaskFormerInstanceDatasetMapper
    )


def test_coco_instance_lsj(tmp_path):
    record = _instance_record(tmp_path)
    out = COCOInstanceNewBaselineDatasetMapper(True, tfm_gens=[], image_format="RGB")(record)
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [3, 7]
    assert inst.gt_boxes.tensor.tolist() == [[0, 0, 10, 10], [2, 12, 8, 18]]
    # Scale 0.5333 (see the panoptic LSJ test): the image fills rows 0-10 and columns 0-15.
    out = build_train_mapper(_cfg("coco_instance_lsj"))(record)
    masks = out["instances"].gt_masks
    assert out["image"].shape == (3, 32, 32) and masks.shape == (2, 32, 32)
    # Rasterized before the transforms; the crop's padding (255) is not part of any mask.
    assert not masks[:, 11:, :].any() and not masks[:, :, 16:].any()
    assert masks[0, :5, :5].all() and masks[1, 7:9, 2:4].all()


def test_mapper_names():
    # Upstream's YAML names are aliases of the registered class names.
    assert set(MAPPER_NAME_ALIASES) == {
        "mask_former_semantic",
        "mask_former_panoptic",
        "mask_former_instance",
        "coco_instance_lsj",
        "coco_panoptic_lsj",
    }
    assert all(name in DATASET_MAPPER_REGISTRY for name in MAPPER_NAME_ALIASES.values())
    assert isinstance(
        build_train_mapper(_cfg("MaskFormerInstanceDatasetMapper")), MaskFormerInstanceDatasetMapper
    )
    # Empty: detectron2's DatasetMapper (the FPN models).
    assert isinstance(build_train_mapper(_cfg("")), DatasetMapper)
    with pytest.raises(ValueError, match="INPUT.DATASET_MAPPER_NAME"):
        build_train_mapper(_cfg("detr_panoptic"))
