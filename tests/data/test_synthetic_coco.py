"""The synthetic COCO-format dataset: files, consistency of the annotations, registration."""

import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from pycocotools.coco import COCO

from freqfusion_d2.data import build_train_mapper, check_dataset_files
from freqfusion_d2.data.datasets import (
    SYNTHETIC_COCO_CATEGORIES,
    register_synthetic_coco,
    synthetic_coco_paths,
)
from freqfusion_d2.data.panoptic_conversion import rgb_to_id
from freqfusion_d2.data.synthetic import generate_synthetic_coco
from freqfusion_d2.engine import setup_cfg

THING_IDS = {c["id"] for c in SYNTHETIC_COCO_CATEGORIES if c["isthing"]}
STUFF_IDS = [c["id"] for c in SYNTHETIC_COCO_CATEGORIES if not c["isthing"]]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ds") / "synthetic_coco")
    assert generate_synthetic_coco(path, num_train=12, num_val=3, seed=1)
    return path


def test_generation_is_kept_and_deterministic(root, tmp_path):
    assert not generate_synthetic_coco(root, num_train=1, num_val=1)  # existing data kept
    other = str(tmp_path / "again")
    generate_synthetic_coco(other, num_train=12, num_val=3, seed=1)
    for rel in ("annotations/panoptic_train2017.json", "annotations/instances_val2017.json"):
        with open(os.path.join(root, rel)) as a, open(os.path.join(other, rel)) as b:
            assert json.load(a) == json.load(b)
    assert not os.path.exists(root + ".tmp")


def test_panoptic_pngs_match_segments_and_semantic_pngs(root):
    paths = synthetic_coco_paths(root, "train")
    with open(paths["panoptic_json"]) as f:
        pan = json.load(f)
    stuff_label = {cid: i + 1 for i, cid in enumerate(STUFF_IDS)}
    all_label = {c["id"]: i for i, c in enumerate(SYNTHETIC_COCO_CATEGORIES)}
    seen_crowd = seen_void = False
    for ann in pan["annotations"]:
        ids = rgb_to_id(
            np.asarray(Image.open(os.path.join(paths["panoptic_root"], ann["file_name"])))
        )
        stuff = np.asarray(Image.open(os.path.join(paths["sem_seg_root"], ann["file_name"])))
        semseg = np.asarray(Image.open(os.path.join(paths["semseg_all_root"], ann["file_name"])))
        assert set(np.unique(ids)) - {0} == {s["id"] for s in ann["segments_info"]}
        for seg in ann["segments_info"]:
            mask = ids == seg["id"]
            assert seg["area"] == mask.sum()
            x, y, w, h = seg["bbox"]
            ys, xs = np.nonzero(mask)
            assert (x, y, w, h) == (
                xs.min(),
                ys.min(),
                xs.max() - xs.min() + 1,
                ys.max() - ys.min() + 1,
            )
            want = 0 if seg["category_id"] in THING_IDS else stuff_label[seg["category_id"]]
            assert (stuff[mask] == want).all()
            assert (semseg[mask] == all_label[seg["category_id"]]).all()
            seen_crowd |= bool(seg["iscrowd"])
        assert (stuff[ids == 0] == 255).all() and (semseg[ids == 0] == 255).all()
        seen_void |= bool((ids == 0).any())
    assert seen_crowd and seen_void


def test_instances_json_agrees_with_panoptic(root):
    paths = synthetic_coco_paths(root, "val")
    coco = COCO(paths["json_file"])
    with open(paths["panoptic_json"]) as f:
        pan = {a["image_id"]: a for a in json.load(f)["annotations"]}
    assert sorted(coco.getCatIds()) == sorted(THING_IDS)
    for image_id in coco.getImgIds():
        things = [s for s in pan[image_id]["segments_info"] if s["category_id"] in THING_IDS]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert sorted((a["category_id"], a["iscrowd"], a["area"]) for a in anns) == sorted(
            (s["category_id"], s["iscrowd"], s["area"]) for s in things
        )
        for a in anns:  # polygon rasterisation agrees with the painted mask up to the border
            mask = coco.annToMask(a)
            assert abs(int(mask.sum()) - a["area"]) <= 0.25 * a["area"] + 20


def test_registration_and_metadata(root):
    register_synthetic_coco(root, prefix="synthtest")
    dicts = DatasetCatalog.get("synthtest_train_panoptic_separated")
    assert len(dicts) == 12
    assert {"file_name", "sem_seg_file_name", "annotations"} <= set(dicts[0])
    meta = MetadataCatalog.get("synthtest_train_panoptic_separated")
    assert meta.thing_classes == ["disc", "box", "triangle"]
    assert meta.stuff_classes == ["things", "sky", "grass", "sand"]
    assert meta.stuff_dataset_id_to_contiguous_id == {0: 0, 7: 1, 9: 2, 10: 3}
    assert meta.evaluator_type == "coco_panoptic_seg"
    with_sem = DatasetCatalog.get("synthtest_val_panoptic_with_sem_seg")
    assert len(with_sem) == 3 and os.path.exists(with_sem[0]["sem_seg_file_name"])
    assert all(s["category_id"] < 6 for d in with_sem for s in d["segments_info"])
    # Mask2Former's convention: one contiguous space over all classes (their list order, the
    # semantic PNG labels); things only in thing_classes; the stuff map covers every class.
    meta = MetadataCatalog.get("synthtest_val_panoptic_with_sem_seg")
    assert meta.thing_classes == ["disc", "box", "triangle"]
    assert meta.stuff_classes == [c["name"] for c in SYNTHETIC_COCO_CATEGORIES]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 4: 2}
    assert meta.stuff_dataset_id_to_contiguous_id == {1: 0, 2: 1, 4: 2, 7: 3, 9: 4, 10: 5}
    for cid in meta.thing_dataset_id_to_contiguous_id.values():
        assert meta.thing_classes[cid] == meta.stuff_classes[cid]
    for d in with_sem:  # segment classes are the labels of the semantic PNG
        ids = rgb_to_id(np.asarray(Image.open(d["pan_seg_file_name"])))
        semseg = np.asarray(Image.open(d["sem_seg_file_name"]))
        for s in d["segments_info"]:
            assert s["isthing"] == (s["category_id"] < 3)
            assert (semseg[ids == s["id"]] == s["category_id"]).all()
    assert len(DatasetCatalog.get("synthtest_val")) == 3


def test_missing_files_name_path_and_remedy(tmp_path):
    register_synthetic_coco(str(tmp_path / "nowhere"), prefix="synthmissing")
    with pytest.raises(FileNotFoundError, match="prepare_synthetic_coco.py") as info:
        DatasetCatalog.get("synthmissing_train_panoptic_separated")
    assert str(tmp_path / "nowhere") in str(info.value)
    with pytest.raises(FileNotFoundError, match="DETECTRON2_DATASETS"):
        check_dataset_files("synthmissing_val")


def test_unknown_mapper_name_is_rejected():
    cfg = setup_cfg("", ["INPUT.DATASET_MAPPER_NAME", "no_such_mapper"])
    with pytest.raises(ValueError, match="DATASET_MAPPER_NAME"):
        build_train_mapper(cfg)
