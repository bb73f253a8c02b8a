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
    nearest = np.argmin(
        [(yy - sy) ** 2 + (xx - sx) ** 2 for sy, sx in seeds], axis=0
    )
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
    """This module's helpers (CATEGORIES, write_png, random_gt, ...), without importing conftest."""
    import sys

    return sys.modules[__name__]
