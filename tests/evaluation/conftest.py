"""Fixtures for the evaluation tests: small COCO-format panoptic data generated on disk."""

import json
import os

import numpy as np
import pytest
from PIL import Image

# Dataset category ids are deliberately not consecutive.
CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1, "supercategory": "person"},
    {"id": 3, "name": "car", "isthing": 1, "supercategory": "vehicle"},
    {"id": 5, "name": "dog", "isthing": 1, "supercategory": "animal"},
    {"id": 7, "name": "sky", "isthing": 0, "supercategory": "sky"},
    {"id": 9, "name": "grass", "isthing": 0, "supercategory": "plant"},
    {"id": 11, "name": "road", "isthing": 0, "supercategory": "ground"},
]
THING_IDS = [c["id"] for c in CATEGORIES if c["isthing"]]
STUFF_IDS = [c["id"] for c in CATEGORIES if not c["isthing"]]


def encode_ids(id_map):
    """(H, W) ids -> (H, W, 3) uint8 colours, id = R + 256 G + 256^2 B (written independently)."""
    id_map = np.asarray(id_map, dtype=np.int64)
    return np.stack([id_map % 256, (id_map // 256) % 256, id_map // 65536], -1).astype(np.uint8)


def write_png(path, id_map):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(encode_ids(id_map)).save(path)


def _blob(rng, h, w):
    """A random rectangle or ellipse mask."""
    y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
    bh, bw = rng.integers(2, max(3, h // 2)), rng.integers(2, max(3, w // 2))
    yy, xx = np.mgrid[:h, :w]
    if rng.random() < 0.5:
        return (yy >= y0) & (yy < y0 + bh) & (xx >= x0) & (xx < x0 + bw)
    cy, cx = y0 + bh / 2, x0 + bw / 2
    return ((yy - cy) / (bh / 2)) ** 2 + ((xx - cx) / (bw / 2)) ** 2 <= 1


def random_gt(rng, h, w, void=True, crowd=True):
    """A random GT panoptic image: (id map, segments_info with exact areas).

    Stuff comes from a Voronoi partition, things are painted blobs; at most one crowd segment per
    thing category (as in COCO); optional VOID rectangle and stray VOID pixels.
    """
    labels = np.zeros((h, w), dtype=np.int64)  # 0 = VOID
    cats = {}
    next_id = iter(rng.permutation(np.arange(1, 5000))[:200] * 3001 + 17)
    seeds = rng.integers(0, [h, w], size=(rng.integers(2, 5), 2))
    seed_cat = rng.choice(STUFF_IDS, size=len(seeds))
    yy, xx = np.mgrid[:h, :w]
    nearest = np.argmin([(yy - sy) ** 2 + (xx - sx) ** 2 for sy, sx in seeds], axis=0)
    for cat in np.unique(seed_cat):
        sid = int(next(next_id))
        labels[np.isin(nearest, np.nonzero(seed_cat == cat)[0])] = sid
        cats[sid] = (int(cat), 0)
    crowd_cats = set()
    for _ in range(rng.integers(1, 7)):
        cat = int(rng.choice(THING_IDS))
        is_crowd = crowd and cat not in crowd_cats and rng.random() < 0.25
        sid = int(next(next_id))
        mask = _blob(rng, h, w)
        if is_crowd:
            crowd_cats.add(cat)
            mask |= _blob(rng, h, w)
        labels[mask] = sid
        cats[sid] = (cat, int(is_crowd))
    if void:
        if rng.random() < 0.7:
            labels[_blob(rng, h, w)] = 0
        labels[rng.random((h, w)) < 0.03] = 0
    segments = []
    for sid in np.unique(labels):
        if sid == 0:
            continue
        cat, is_crowd = cats[int(sid)]
        segments.append(
            {
                "id": int(sid),
                "category_id": cat,
                "iscrowd": is_crowd,
                "area": int((labels == sid).sum()),
                "bbox": [0, 0, 1, 1],
            }
        )
    return labels, segments


def random_prediction(rng, gt_labels, gt_segments):
    """A prediction derived from the GT: shifted, relabelled, merged, with extra blobs and VOID."""
    h, w = gt_labels.shape
    dy, dx = rng.integers(-2, 3, size=2)
    pred = np.roll(gt_labels, (dy, dx), axis=(0, 1))
    cats = {s["id"]: s["category_id"] for s in gt_segments}
    cats[0] = int(rng.choice(STUFF_IDS))  # GT VOID becomes some stuff in the prediction
    for sid in list(cats):
        r = rng.random()
        if r < 0.15:
            cats[sid] = int(rng.choice([c["id"] for c in CATEGORIES]))
    for _ in range(rng.integers(0, 4)):
        sid = int(rng.integers(1, 1 << 24))
        pred[_blob(rng, h, w)] = sid
        cats[sid] = int(rng.choice([c["id"] for c in CATEGORIES]))
    if rng.random() < 0.3:
        pred[_blob(rng, h, w)] = -1  # predicted VOID
    # Fresh ids for the prediction, so GT and prediction ids are unrelated.
    out = np.zeros_like(pred)
    segments = []
    used = set()
    for sid in np.unique(pred):
        if sid == -1:
            continue
        new = int(rng.integers(1, 1 << 24))
        while new in used:
            new = int(rng.integers(1, 1 << 24))
        used.add(new)
        out[pred == sid] = new
        segments.append({"id": new, "category_id": cats[int(sid)]})
    return out, segments


def write_panoptic_json(path, annotations, images=None):
    images = images or [
        {"id": a["image_id"], "file_name": a["file_name"].replace(".png", ".jpg")}
        for a in annotations
    ]
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": CATEGORIES}, f)


def make_random_set(root, seed, n_images, size=(24, 32), void=True, crowd=True):
    """GT and prediction json + PNG folders under root (panopticapi's default folder layout).

    Returns:
        (gt_json, pred_json, gt_maps, pred_maps) with the id maps and segment lists per image.
    """
    rng = np.random.default_rng(seed)
    gt_anns, pred_anns, gt_maps, pred_maps = [], [], [], []
    for i in range(n_images):
        h = size[0] + int(rng.integers(0, 5))
        w = size[1] + int(rng.integers(0, 5))
        gt, gt_segs = random_gt(rng, h, w, void=void, crowd=crowd)
        pred, pred_segs = random_prediction(rng, gt, gt_segs)
        name = f"img_{i:04d}.png"
        write_png(os.path.join(root, "gt", name), gt)
        write_png(os.path.join(root, "pred", name), pred)
        gt_anns.append({"image_id": i, "file_name": name, "segments_info": gt_segs})
        pred_anns.append({"image_id": i, "file_name": name, "segments_info": pred_segs})
        gt_maps.append((gt, gt_segs))
        pred_maps.append((pred, pred_segs))
    gt_json = os.path.join(root, "gt.json")
    pred_json = os.path.join(root, "pred.json")
    write_panoptic_json(gt_json, gt_anns)
    write_panoptic_json(pred_json, pred_anns)
    return gt_json, pred_json, gt_maps, pred_maps


@pytest.fixture
def random_panoptic_set(tmp_path):
    """Factory: ``random_panoptic_set(seed, n_images, **kw)`` -> see :func:`make_random_set`."""

    def make(seed, n_images, **kwargs):
        root = tmp_path / f"set_{seed}"
        root.mkdir()
        return make_random_set(str(root), seed, n_images, **kwargs)

    return make


@pytest.fixture(scope="session")
def synth():
    """This module's helpers (CATEGORIES, write_png, random_gt, ...), without importing conftest
    (several test folders have a conftest module)."""
    import types

    return types.SimpleNamespace(**globals())


THING_CONTIGUOUS = {c["id"]: i for i, c in enumerate(CATEGORIES) if c["isthing"]}
ALL_CONTIGUOUS = {c["id"]: i for i, c in enumerate(CATEGORIES)}


def write_registered_panoptic(root, name, n_images=4, seed=0, size=(24, 32), layout="joint"):
    """Write and register a COCO-format panoptic dataset (panoptic + instances + semantic GT).

    layout "joint" (Mask2Former style): one contiguous space over all categories; semantic GT
    holds that space with 255 for VOID. The dataset gets evaluator_type "coco_panoptic_seg".

    Returns:
        (dataset dicts, gt id maps with segments) for building model outputs.
    """
    import pycocotools.mask as mask_util
    from detectron2.data import DatasetCatalog, MetadataCatalog

    rng = np.random.default_rng(seed)
    pan_dir = os.path.join(root, "panoptic")
    sem_dir = os.path.join(root, "semantic")
    os.makedirs(sem_dir, exist_ok=True)
    images, pan_anns, inst_anns, dicts, gt_maps = [], [], [], [], []
    ann_id = 1
    for i in range(n_images):
        h, w = size
        gt, segs = random_gt(rng, h, w)
        image_id = 100 + i
        stem = f"{image_id:06d}"
        write_png(os.path.join(pan_dir, stem + ".png"), gt)
        sem = np.full((h, w), 255, dtype=np.uint8)
        for s in segs:
            sem[gt == s["id"]] = ALL_CONTIGUOUS[s["category_id"]]
        Image.fromarray(sem).save(os.path.join(sem_dir, stem + ".png"))
        images.append({"id": image_id, "file_name": stem + ".jpg", "height": h, "width": w})
        pan_anns.append({"image_id": image_id, "file_name": stem + ".png", "segments_info": segs})
        for s in segs:
            if s["category_id"] not in THING_CONTIGUOUS:
                continue
            m = np.asfortranarray((gt == s["id"]).astype(np.uint8))
            rle = mask_util.encode(m)
            rle["counts"] = rle["counts"].decode("ascii")
            inst_anns.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": s["category_id"],
                    "segmentation": rle,
                    "area": float(mask_util.area(rle)),
                    "bbox": [float(v) for v in mask_util.toBbox(rle)],
                    "iscrowd": s["iscrowd"],
                }
            )
            ann_id += 1
        dicts.append(
            {
                "file_name": os.path.join(root, "images", stem + ".jpg"),
                "image_id": image_id,
                "height": h,
                "width": w,
                "pan_seg_file_name": os.path.join(pan_dir, stem + ".png"),
                "sem_seg_file_name": os.path.join(sem_dir, stem + ".png"),
                "segments_info": [
                    dict(s, category_id=ALL_CONTIGUOUS[s["category_id"]]) for s in segs
                ],
            }
        )
        gt_maps.append((gt, segs))
    pan_json = os.path.join(root, "panoptic.json")
    with open(pan_json, "w") as f:
        json.dump({"images": images, "annotations": pan_anns, "categories": CATEGORIES}, f)
    inst_json = os.path.join(root, "instances.json")
    with open(inst_json, "w") as f:
        json.dump(
            {
                "images": images,
                "annotations": inst_anns,
                "categories": [c for c in CATEGORIES if c["isthing"]],
            },
            f,
        )
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(
        evaluator_type="coco_panoptic_seg",
        panoptic_json=pan_json,
        panoptic_root=pan_dir,
        json_file=inst_json,
        sem_seg_root=sem_dir,
        thing_classes=[c["name"] for c in CATEGORIES if c["isthing"]],
        stuff_classes=[c["name"] for c in CATEGORIES],
        thing_dataset_id_to_contiguous_id=THING_CONTIGUOUS,
        stuff_dataset_id_to_contiguous_id=ALL_CONTIGUOUS,
        ignore_label=255,
        label_divisor=1000,
    )
    return dicts, gt_maps


@pytest.fixture
def registered(tmp_path):
    """Factory registering datasets under unique names; unregisters them after the test."""
    import uuid

    from detectron2.data import DatasetCatalog, MetadataCatalog

    names = []

    def register(kind="panoptic", **kwargs):
        name = f"ffd2_test_{kind}_{uuid.uuid4().hex[:8]}"
        root = tmp_path / name
        root.mkdir()
        names.append(name)
        if kind == "panoptic":
            return (name,) + write_registered_panoptic(str(root), name, **kwargs)
        raise ValueError(kind)

    yield register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
