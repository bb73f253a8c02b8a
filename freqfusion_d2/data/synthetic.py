"""Generator of the synthetic COCO-format dataset (see ``datasets/synthetic_coco.py``).

Each image has two stuff regions (sky, grass or sand, each with its own texture) split by a wavy
boundary, one to four textured things (disc, box, triangle) that do not overlap, sometimes a
crowd of small discs (one ``iscrowd=1`` segment) and sometimes an unlabeled (void) patch of
noise. Classes differ in colour and texture, so a small model learns them in a few hundred
iterations.
"""

import json
import logging
import os
import shutil
from typing import Dict, List, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from .datasets.synthetic_coco import SYNTHETIC_COCO_CATEGORIES, synthetic_coco_paths
from .panoptic_conversion import id_to_rgb, panoptic_to_semantic, semseg_label_map, stuff_label_map

logger = logging.getLogger(__name__)

__all__ = ["generate_synthetic_coco", "render_synthetic_image"]

_THINGS = [c for c in SYNTHETIC_COCO_CATEGORIES if c["isthing"]]
_STUFF = [c for c in SYNTHETIC_COCO_CATEGORIES if not c["isthing"]]
_CROWD_CATEGORY = _THINGS[0]


def _texture(rng: np.random.Generator, h: int, w: int, name: str, color) -> np.ndarray:
    """(h, w, 3) float texture of a class: its colour, jittered per image, and a pattern."""
    base = np.asarray(color, dtype=np.float32) + rng.uniform(-15, 15, size=3)
    img = np.broadcast_to(base, (h, w, 3)).copy()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if name == "box":  # diagonal stripes
        img *= (0.85 + 0.15 * np.sign(np.sin((xx + yy) * np.pi / 4)))[..., None]
    elif name == "triangle":  # coarse checker
        img *= (0.9 + 0.1 * (((xx // 4) + (yy // 4)) % 2))[..., None]
    elif name == "sky":  # brighter towards the top
        img *= (1.1 - 0.2 * yy / max(h - 1, 1))[..., None]
    elif name == "sand":  # dark speckles
        img *= np.where(rng.random((h, w)) < 0.08, 0.6, 1.0)[..., None]
    noise = {"grass": 28.0, "disc": 10.0}.get(name, 6.0)
    img += rng.normal(0.0, noise, size=(h, w, 3))
    return img


def _thing_polygon(rng: np.random.Generator, name: str, cx: float, cy: float, size: float):
    """Polygon (K, 2) of a thing of the given class centred at (cx, cy)."""
    if name == "disc":
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], axis=1) * size / 2
    elif name == "box":
        aspect = rng.uniform(0.6, 1.6)
        half = np.array([size / 2 * aspect**0.5, size / 2 / aspect**0.5])
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * half
    else:
        t = np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) - np.pi / 2
        pts = np.stack([np.cos(t), np.sin(t)], axis=1) * size / 1.6
    angle = rng.uniform(-np.pi / 6, np.pi / 6) if name != "disc" else 0.0
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return pts @ rot.T + np.array([cx, cy])


def _fill(poly: np.ndarray, h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    return mask.astype(bool)


def _bbox(mask: np.ndarray) -> List[float]:
    ys, xs = np.nonzero(mask)
    return [
        float(xs.min()),
        float(ys.min()),
        float(xs.max() - xs.min() + 1),
        float(ys.max() - ys.min() + 1),
    ]


def render_synthetic_image(
    rng: np.random.Generator, height: int, width: int
) -> Tuple[np.ndarray, np.ndarray, List[Dict]]:
    """Renders one image.

    Returns:
        image: (H, W, 3) uint8 RGB.
        segment_map: (H, W) int32 segment index + 1 per pixel, 0 = void.
        segments: per segment index, dict with ``category`` (a category dict), ``iscrowd`` and,
            for non-crowd things, ``polygon`` (K, 2).
    """
    h, w = height, width
    image = np.zeros((h, w, 3), dtype=np.float32)
    segment_map = np.zeros((h, w), dtype=np.int32)
    segments: List[Dict] = []
    occupied = np.zeros((h, w), dtype=bool)

    top, bottom = rng.choice(len(_STUFF), size=2, replace=False)
    xs = np.arange(w)
    boundary = h * rng.uniform(0.35, 0.65) + h * 0.08 * np.sin(
        2 * np.pi * xs / rng.uniform(0.5 * w, 1.5 * w) + rng.uniform(0, 2 * np.pi)
    )
    upper = np.arange(h)[:, None] < boundary[None, :]
    for region, idx in ((upper, top), (~upper, bottom)):
        cat = _STUFF[idx]
        image[region] = _texture(rng, h, w, cat["name"], cat["color"])[region]
        segments.append({"category": cat, "iscrowd": 0})
        segment_map[region] = len(segments)

    if rng.random() < 0.5:  # void: unlabeled noise
        vh, vw = rng.integers(8, 18, size=2)
        y0, x0 = rng.integers(0, h - vh), rng.integers(0, w - vw)
        image[y0 : y0 + vh, x0 : x0 + vw] = rng.uniform(0, 255, size=(vh, vw, 3))
        segment_map[y0 : y0 + vh, x0 : x0 + vw] = 0
        occupied[max(y0 - 2, 0) : y0 + vh + 2, max(x0 - 2, 0) : x0 + vw + 2] = True

    if rng.random() < 0.35:  # a crowd of small discs, one segment
        cy, cx = rng.integers(14, h - 14), rng.integers(14, w - 14)
        crowd = np.zeros((h, w), dtype=bool)
        for _ in range(rng.integers(4, 8)):
            py, px = cy + rng.integers(-9, 10), cx + rng.integers(-9, 10)
            r = int(rng.integers(2, 5))
            disc = np.zeros((h, w), dtype=np.uint8)
            cv2.circle(disc, (int(px), int(py)), r, 1, -1)
            crowd |= disc.astype(bool)
        if not (crowd & occupied).any():
            tex = _texture(rng, h, w, _CROWD_CATEGORY["name"], _CROWD_CATEGORY["color"])
            image[crowd] = tex[crowd]
            segments.append({"category": _CROWD_CATEGORY, "iscrowd": 1})
            segment_map[crowd] = len(segments)
            occupied |= cv2.dilate(crowd.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0

    for _ in range(int(rng.integers(1, 5))):
        cat = _THINGS[rng.integers(len(_THINGS))]
        for _attempt in range(20):
            size = rng.uniform(14, 36)
            cx, cy = rng.uniform(size / 2 + 2, w - size / 2 - 2), rng.uniform(
                size / 2 + 2, h - size / 2 - 2
            )
            poly = _thing_polygon(rng, cat["name"], cx, cy, size)
            poly[:, 0] = poly[:, 0].clip(0, w - 1)
            poly[:, 1] = poly[:, 1].clip(0, h - 1)
            mask = _fill(poly, h, w)
            if mask.sum() >= 48 and not (mask & occupied).any():
                break
        else:
            continue
        image[mask] = _texture(rng, h, w, cat["name"], cat["color"])[mask]
        segments.append({"category": cat, "iscrowd": 0, "polygon": poly})
        segment_map[mask] = len(segments)
        occupied |= cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0

    return np.clip(image, 0, 255).astype(np.uint8), segment_map, segments


def _write_split(out: str, split: str, num_images: int, rng: np.random.Generator, first_id: int):
    paths = synthetic_coco_paths(out, split)
    for key in ("image_root", "panoptic_root", "sem_seg_root", "semseg_all_root"):
        os.makedirs(paths[key], exist_ok=True)
    os.makedirs(os.path.dirname(paths["json_file"]), exist_ok=True)
    stuff_map = stuff_label_map(SYNTHETIC_COCO_CATEGORIES)
    semseg_map = semseg_label_map(SYNTHETIC_COCO_CATEGORIES)

    images, instances, panoptic = [], [], []
    ann_id = 1
    for i in range(num_images):
        image_id = first_id + i
        h, w = int(rng.integers(96, 129)), int(rng.integers(112, 161))
        image, segment_map, segments = render_synthetic_image(rng, h, w)
        stem = f"{image_id:012d}"
        Image.fromarray(image).save(os.path.join(paths["image_root"], stem + ".jpg"), quality=95)
        images.append({"id": image_id, "file_name": stem + ".jpg", "height": h, "width": w})

        segments_info = []
        for index, seg in enumerate(segments, start=1):
            mask = segment_map == index
            area = int(mask.sum())
            if area == 0:
                continue
            cat = seg["category"]
            # Segment ids encode (category, index) like COCO's arbitrary but unique ids.
            seg_id = cat["id"] * 1000 + index
            segment_map[mask] = seg_id
            segments_info.append(
                {
                    "id": seg_id,
                    "category_id": cat["id"],
                    "iscrowd": seg["iscrowd"],
                    "bbox": _bbox(mask),
                    "area": area,
                }
            )
            if not cat["isthing"]:
                continue
            if seg["iscrowd"]:
                rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                segmentation = rle
            else:
                segmentation = [seg["polygon"].reshape(-1).round(2).tolist()]
            instances.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": cat["id"],
                    "segmentation": segmentation,
                    "area": area,
                    "bbox": _bbox(mask),
                    "iscrowd": seg["iscrowd"],
                }
            )
            ann_id += 1
        pan_rgb = id_to_rgb(segment_map)
        Image.fromarray(pan_rgb).save(os.path.join(paths["panoptic_root"], stem + ".png"))
        for key, label_map in (("sem_seg_root", stuff_map), ("semseg_all_root", semseg_map)):
            labels = panoptic_to_semantic(pan_rgb, segments_info, label_map)
            Image.fromarray(labels).save(os.path.join(paths[key], stem + ".png"))
        panoptic.append(
            {"image_id": image_id, "file_name": stem + ".png", "segments_info": segments_info}
        )

    info = {"description": "freqfusion_d2 synthetic COCO-format dataset", "version": "1.0"}
    things = [
        {"id": c["id"], "name": c["name"], "supercategory": "shape"}
        for c in SYNTHETIC_COCO_CATEGORIES
        if c["isthing"]
    ]
    with open(paths["json_file"], "w") as f:
        json.dump(
            {"info": info, "images": images, "annotations": instances, "categories": things}, f
        )
    with open(paths["panoptic_json"], "w") as f:
        json.dump(
            {
                "info": info,
                "images": images,
                "annotations": panoptic,
                "categories": [
                    dict(c, supercategory="synthetic") for c in SYNTHETIC_COCO_CATEGORIES
                ],
            },
            f,
        )


def generate_synthetic_coco(
    root: str, num_train: int = 96, num_val: int = 24, seed: int = 0, overwrite: bool = False
) -> bool:
    """Writes the synthetic dataset to ``root`` (e.g. ``$DETECTRON2_DATASETS/synthetic_coco``).

    The dataset is written to a temporary folder and renamed into place, so an interrupted run
    never leaves a partial dataset at ``root``.

    Args:
        root: output folder.
        num_train, num_val: number of images per split.
        seed: random seed; the same seed gives the same dataset.
        overwrite: replace an existing ``root`` (otherwise an existing one is kept).

    Returns:
        True if the dataset was written, False if ``root`` existed and was kept.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train and num_val must be >= 1, got {num_train}, {num_val}")
    if os.path.exists(root) and not overwrite:
        logger.info("Synthetic dataset already at %s; keeping it", root)
        return False
    tmp = root.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(seed)
    _write_split(tmp, "train", num_train, rng, first_id=1)
    _write_split(tmp, "val", num_val, rng, first_id=100000)
    if os.path.exists(root):
        shutil.rmtree(root)
    os.replace(tmp, root)
    logger.info("Wrote %d train and %d val images to %s", num_train, num_val, root)
    return True
