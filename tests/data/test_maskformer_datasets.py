"""Mask2Former dataset registrations and the two preparation scripts on tiny generated data."""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES, COCO_CATEGORIES
from PIL import Image

from freqfusion_d2.data.datasets.ade20k_categories import ADE20K_150_CATEGORIES, ADE20K_150_COLORS
from freqfusion_d2.data.datasets.register_maskformer import (
    get_coco_panoptic_with_sem_seg_metadata,
    register_ade20k_sem_seg,
    register_coco_panoptic_with_sem_seg,
)

REPO = Path(__file__).resolve().parents[2]


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "datasets" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _id_to_rgb(ids):
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def test_builtin_names_and_metadata():
    # Registered on import: the new *_with_sem_seg names; detectron2's names are patched.
    assert {"coco_2017_train_panoptic_with_sem_seg", "coco_2017_val_panoptic_with_sem_seg"} <= set(
        DatasetCatalog.list()
    )
    train = MetadataCatalog.get("coco_2017_train_panoptic")
    assert len(train.thing_classes) == 80 and len(train.stuff_classes) == 133
    val = MetadataCatalog.get("coco_2017_val_panoptic_with_sem_seg")
    assert val.evaluator_type == "coco_panoptic_seg" and val.ignore_label == 255
    assert len(val.stuff_dataset_id_to_contiguous_id) == 133
    assert len(val.thing_dataset_id_to_contiguous_id) == 80
    ade = MetadataCatalog.get("ade20k_sem_seg_val")
    assert ade.stuff_colors == ADE20K_150_COLORS and len(ade.stuff_classes) == 150


def test_ade20k_class_table():
    assert len(ADE20K_150_CATEGORIES) == 150
    assert [n for n, _, _ in ADE20K_150_CATEGORIES] == [
        n.strip() for n in ADE20K_SEM_SEG_CATEGORIES
    ]
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in ADE20K_150_COLORS)


@pytest.fixture
def coco_root(tmp_path):
    """One val image whose panoptic PNG has person (cat 1), banner (stuff cat 92), a crowd car
    (cat 3) and void."""
    coco = tmp_path / "coco"
    for d in ("annotations", "val2017", "panoptic_val2017"):
        (coco / d).mkdir(parents=True)
    ids = np.zeros((6, 8), dtype=np.int64)
    ids[:3, :4] = 11
    ids[3:, :] = 22
    ids[:3, 6:] = 33
    Image.fromarray(_id_to_rgb(ids)).save(coco / "panoptic_val2017" / "000000000001.png")
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(coco / "val2017" / "000000000001.jpg")
    segments = [
        {"id": 11, "category_id": 1, "iscrowd": 0},
        {"id": 22, "category_id": 92, "iscrowd": 0},
        {"id": 33, "category_id": 3, "iscrowd": 1},
    ]
    annotation = {"image_id": 1, "file_name": "000000000001.png", "segments_info": segments}
    with open(coco / "annotations" / "panoptic_val2017.json", "w") as f:
        json.dump({"annotations": [annotation], "categories": COCO_CATEGORIES}, f)
    return tmp_path, ids


def _register_tiny_coco(root, name):
    coco = os.path.join(root, "coco")
    register_coco_panoptic_with_sem_seg(
        name,
        get_coco_panoptic_with_sem_seg_metadata(),
        os.path.join(coco, "val2017"),
        os.path.join(coco, "panoptic_val2017"),
        os.path.join(coco, "annotations", "panoptic_val2017.json"),
        os.path.join(coco, "panoptic_semseg_val2017"),
        os.path.join(coco, "annotations", "instances_val2017.json"),
    )


def test_coco_semantic_from_panoptic_and_registration(coco_root):
    root, ids = coco_root
    name = "freqfusion_d2_test_coco_val_panoptic"
    _register_tiny_coco(str(root), name)
    # Registration is lazy; loading before the semantic PNGs exist names the script to run.
    with pytest.raises(FileNotFoundError, match="prepare_coco_semantic_from_panoptic.py"):
        DatasetCatalog.get(f"{name}_with_sem_seg")

    script = _load_script("prepare_coco_semantic_from_panoptic")
    assert script.convert_split(str(root), "val", workers=1) == 1
    semantic = np.asarray(
        Image.open(root / "coco" / "panoptic_semseg_val2017" / "000000000001.png")
    )
    # Labels are positions in COCO_CATEGORIES: person 0, car 2 (crowd kept), banner 80 (the
    # first stuff class); void 255.
    expected = np.full(ids.shape, 255, np.uint8)
    expected[ids == 11], expected[ids == 22], expected[ids == 33] = 0, 80, 2
    assert np.array_equal(semantic, expected)

    [record] = DatasetCatalog.get(f"{name}_with_sem_seg")
    assert record["sem_seg_file_name"].endswith("panoptic_semseg_val2017/000000000001.png")
    assert record["file_name"].endswith("val2017/000000000001.jpg")
    info = {s["id"]: (s["category_id"], s["isthing"]) for s in record["segments_info"]}
    assert info == {11: (0, True), 22: (80, False), 33: (2, True)}


def test_ade20k_prepare_and_registration(tmp_path):
    ade = tmp_path / "ADEChallengeData2016"
    raw = np.array([[0, 1, 2], [149, 150, 0]], dtype=np.uint8)
    for split in ("training", "validation"):
        (ade / "annotations" / split).mkdir(parents=True)
        (ade / "images" / split).mkdir(parents=True)
        Image.fromarray(raw).save(ade / "annotations" / split / "ADE_x_1.png")
        Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(ade / "images" / split / "ADE_x_1.jpg")

    default_root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
    try:
        register_ade20k_sem_seg(str(tmp_path))
        with pytest.raises(FileNotFoundError, match="prepare_ade20k_sem_seg.py"):
            DatasetCatalog.get("ade20k_sem_seg_val")

        _load_script("prepare_ade20k_sem_seg").main(["--root", str(tmp_path)])
        out = np.asarray(Image.open(ade / "annotations_detectron2" / "validation" / "ADE_x_1.png"))
        # Raw v -> v - 1; raw 0 ("other") -> 255 (ignored).
        assert np.array_equal(out, np.array([[255, 0, 1], [148, 149, 255]], dtype=np.uint8))

        [record] = DatasetCatalog.get("ade20k_sem_seg_val")
        assert record["file_name"] == str(ade / "images" / "validation" / "ADE_x_1.jpg")
        assert record["sem_seg_file_name"].endswith("annotations_detectron2/validation/ADE_x_1.png")
        meta = MetadataCatalog.get("ade20k_sem_seg_val")
        assert meta.sem_seg_root == str(ade / "annotations_detectron2" / "validation")
        assert meta.ignore_label == 255 and len(meta.stuff_colors) == 150
    finally:
        register_ade20k_sem_seg(default_root)
    assert MetadataCatalog.get("ade20k_sem_seg_val").image_root.startswith(default_root)


def test_ade20k_convert_label_rejects_bad_input():
    script = _load_script("prepare_ade20k_sem_seg")
    with pytest.raises(ValueError, match="raw"):
        script.convert_label(np.array([[151]], dtype=np.uint8))
    with pytest.raises(ValueError, match="raw"):
        script.convert_label(np.zeros((2, 2), dtype=np.int32))
