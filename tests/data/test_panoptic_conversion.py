"""Panoptic -> semantic conversion (Panoptic FPN stuff maps and all-class maps)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from freqfusion_d2.data.panoptic_conversion import (
    convert_panoptic_to_semantic,
    id_to_rgb,
    panoptic_to_semantic,
    rgb_to_id,
    semseg_label_map,
    stuff_label_map,
)

CATS = [
    {"id": 3, "isthing": 1},
    {"id": 8, "isthing": 0},
    {"id": 5, "isthing": 1},
    {"id": 20, "isthing": 0},
]


def test_rgb_id_round_trip():
    ids = np.array([[0, 1, 255], [256, 65536 + 7, 256**3 - 1]])
    rgb = id_to_rgb(ids)
    assert rgb[1, 0].tolist() == [0, 1, 0]
    np.testing.assert_array_equal(rgb_to_id(rgb), ids)
    with pytest.raises(ValueError, match="ids"):
        id_to_rgb(np.array([256**3]))


def test_label_maps():
    assert stuff_label_map(CATS) == {3: 0, 8: 1, 5: 0, 20: 2}
    assert semseg_label_map(CATS) == {3: 0, 8: 1, 5: 2, 20: 3}


def test_panoptic_to_semantic_by_hand():
    ids = np.array([[0, 300, 300], [1001, 1001, 77]])
    segments = [
        {"id": 300, "category_id": 3},  # thing (crowd or not: the same)
        {"id": 1001, "category_id": 20},
        {"id": 77, "category_id": 5},
    ]
    out = panoptic_to_semantic(id_to_rgb(ids), segments, stuff_label_map(CATS))
    np.testing.assert_array_equal(out, [[255, 0, 0], [2, 2, 0]])
    out = panoptic_to_semantic(id_to_rgb(ids), segments, semseg_label_map(CATS))
    np.testing.assert_array_equal(out, [[255, 0, 0], [3, 3, 2]])
    with pytest.raises(ValueError, match="category_id 99"):
        panoptic_to_semantic(id_to_rgb(ids), [{"id": 77, "category_id": 99}], {})


def test_convert_directory(tmp_path):
    pan_root = tmp_path / "panoptic"
    pan_root.mkdir()
    ids = np.array([[0, 300], [1001, 1001]])
    Image.fromarray(id_to_rgb(ids)).save(pan_root / "a.png")
    segments = [{"id": 300, "category_id": 3}, {"id": 1001, "category_id": 8}]
    with open(tmp_path / "pan.json", "w") as f:
        json.dump({"annotations": [{"file_name": "a.png", "segments_info": segments}]}, f)
    n = convert_panoptic_to_semantic(
        str(tmp_path / "pan.json"), str(pan_root), str(tmp_path / "out"), stuff_label_map(CATS)
    )
    assert n == 1
    out = np.asarray(Image.open(os.path.join(tmp_path, "out", "a.png")))
    np.testing.assert_array_equal(out, [[255, 0], [1, 1]])
    with pytest.raises(FileNotFoundError, match="missing.json"):
        convert_panoptic_to_semantic(str(tmp_path / "missing.json"), str(pan_root), "x", {})
