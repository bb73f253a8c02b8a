import json
import os
import subprocess
import sys

import numpy as np
import pytest

from freqfusion_d2.evaluation import pq_compute
from freqfusion_d2.evaluation.panoptic import id2rgb, rgb2id
from freqfusion_d2.evaluation.panoptic.__main__ import main as pq_main


def _write_set(synth, root, gt_items, pred_items):
    """gt_items / pred_items: [(image_id, id map, segments_info)] -> (gt_json, pred_json)."""
    for sub, items in (("gt", gt_items), ("pred", pred_items)):
        anns = []
        for image_id, id_map, segs in items:
            name = f"{image_id}.png"
            synth.write_png(os.path.join(root, sub, name), id_map)
            anns.append({"image_id": image_id, "file_name": name, "segments_info": segs})
        synth.write_panoptic_json(os.path.join(root, f"{sub}.json"), anns)
    return os.path.join(root, "gt.json"), os.path.join(root, "pred.json")


def _seg(sid, cat, area=None, iscrowd=0):
    s = {"id": sid, "category_id": cat, "iscrowd": iscrowd}
    if area is not None:
        s["area"] = area
    return s


def test_rgb_id_round_trip():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 123456, (1 << 24) - 1]])
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8
    # 123456 = 64 + 256 * 226 + 65536 * 1
    assert rgb[1, 2].tolist() == [64, 226, 1]
    np.testing.assert_array_equal(rgb2id(rgb), ids)
    with pytest.raises(ValueError, match="id_map"):
        id2rgb(np.array([[-1]]))


def test_hand_worked(tmp_path, synth):
    # Categories: person(1, thing), car(3, thing), dog(5, thing), sky(7), grass(9), road(11).
    # Image 0, 4 x 8, GT (0 = VOID):
    #   1 1 2 2 2 2 4 4        1: person, 8 px          2: sky, 8 px
    #   1 1 2 2 2 2 4 4        3: person crowd, 4 px    4: car, 4 px
    #   1 1 3 3 0 0 0 0        VOID: 8 px
    #   1 1 3 3 0 0 0 0
    gt0 = np.array(
        [
            [1, 1, 2, 2, 2, 2, 4, 4],
            [1, 1, 2, 2, 2, 2, 4, 4],
            [1, 1, 3, 3, 0, 0, 0, 0],
            [1, 1, 3, 3, 0, 0, 0, 0],
        ]
    )
    gt0_segs = [_seg(1, 1, 8), _seg(2, 7, 8), _seg(3, 1, 4, iscrowd=1), _seg(4, 3, 4)]
    # Prediction:
    #   10 10 10 11 11 11 14 14   10: person, 10 px; 11: sky, 10 px (4 of them on VOID)
    #   10 10 10 11 11 11 13 13   12: person, 4 px, all on the person crowd region
    #   10 10 12 12 11 11 13 13   13: car, 6 px: 2 on GT car, 4 on VOID
    #   10 10 12 12 11 11 13 13   14: dog, 2 px on GT car
    pred0 = np.array(
        [
            [10, 10, 10, 11, 11, 11, 14, 14],
            [10, 10, 10, 11, 11, 11, 13, 13],
            [10, 10, 12, 12, 11, 11, 13, 13],
            [10, 10, 12, 12, 11, 11, 13, 13],
        ]
    )
    pred0_segs = [_seg(10, 1), _seg(11, 7), _seg(12, 1), _seg(13, 3), _seg(14, 5)]
    # person: 10 vs 1: inter 8, union 10 + 8 - 8 - 0 (VOID) = 10, IoU 0.8 -> TP
    # sky: 11 vs 2: inter 6, union 10 + 8 - 6 - 4 = 8, IoU 0.75 -> TP
    # 12: crowd never matches; ignored area (VOID 0 + same-category crowd 4) / 4 = 1 > 0.5 -> not FP
    # car: 13 vs 4: inter 2, union 6 + 4 - 2 - 4 = 4, IoU 0.5, not > 0.5 -> no match;
    #   GT car -> FN; 13 ignored: VOID 4 / 6 > 0.5 -> not FP
    # dog: 14 unmatched, ignored 0 / 2 -> FP
    #
    # Image 1, 2 x 2: GT all sky (id 5, 4 px). Prediction: 20 person (1 px), 21 sky (3 px).
    # sky: IoU 3 / 4 = 0.75 -> TP; person 20 -> FP.
    gt1 = np.full((2, 2), 5)
    pred1 = np.array([[20, 21], [21, 21]])
    gt_json, pred_json = _write_set(
        synth,
        str(tmp_path),
        [(0, gt0, gt0_segs), (1, gt1, [_seg(5, 7, 4)])],
        [(0, pred0, pred0_segs), (1, pred1, [_seg(20, 1), _seg(21, 7)])],
    )
    res = pq_compute(gt_json, pred_json, num_workers=1)
    # person: TP 1 (IoU 0.8), FP 1: PQ = 0.8 / 1.5, SQ = 0.8, RQ = 1 / 1.5
    # sky: TP 2 (IoU 0.75 + 0.75): PQ = SQ = 0.75, RQ = 1
    # car: FN 1 and dog: FP 1: PQ = SQ = RQ = 0 (counted); grass, road: absent (not counted)
    pc = res["per_class"]
    assert pc[1] == pytest.approx({"pq": 0.8 / 1.5, "sq": 0.8, "rq": 1 / 1.5})
    assert pc[7] == pytest.approx({"pq": 0.75, "sq": 0.75, "rq": 1.0})
    assert pc[3] == pc[5] == pc[9] == pc[11] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    # Things (person, car, dog): PQ (0.5333 + 0 + 0) / 3, SQ 0.8 / 3, RQ 0.6667 / 3
    assert res["Things"] == pytest.approx({"pq": 0.8 / 4.5, "sq": 0.8 / 3, "rq": 1 / 4.5, "n": 3})
    assert res["Stuff"] == pytest.approx({"pq": 0.75, "sq": 0.75, "rq": 1.0, "n": 1})
    # All: PQ (0.5333 + 0.75 + 0 + 0) / 4, SQ (0.8 + 0.75) / 4, RQ (0.6667 + 1) / 4
    assert res["All"] == pytest.approx(
        {"pq": (0.8 / 1.5 + 0.75) / 4, "sq": 1.55 / 4, "rq": (1 / 1.5 + 1) / 4, "n": 4}
    )
    assert set(res) == {"All", "Things", "Stuff", "per_class"}


def test_gt_area_comes_from_json_and_crowd_last_wins(tmp_path, synth):
    # As in panopticapi, the GT area is the JSON "area". GT 1 x 4: [1 1 1 0] with area stated 4
    # (1 more than its pixels). Prediction [10 10 10 10] of the same class:
    # union = 4 (pred) + 4 (JSON) - 3 (inter) - 1 (VOID) = 4 -> IoU 0.75 (with the PNG area 3
    # it would be 3 / 3 = 1).
    gt = np.array([[1, 1, 1, 0]])
    pred = np.array([[10, 10, 10, 10]])
    gt_json, pred_json = _write_set(
        synth, str(tmp_path / "a"), [(0, gt, [_seg(1, 7, 4)])], [(0, pred, [_seg(10, 7)])]
    )
    assert pq_compute(gt_json, pred_json, num_workers=1)["per_class"][7]["sq"] == 0.75

    # Two crowd regions of one category: only the last listed counts as crowd for FP filtering.
    # GT 1 x 4: [2 2 3 3], both person crowds. Prediction [10 10 10 11]: 10 covers 2 px of
    # crowd 2 and 1 px of crowd 3; 11 covers 1 px of crowd 3.
    # 10: ignored = 1 (crowd 3) / 3 <= 0.5 -> FP; 11: 1 / 1 -> ignored.  person: FP 1 -> PQ 0
    gt = np.array([[2, 2, 3, 3]])
    pred = np.array([[10, 10, 10, 11]])
    gt_json, pred_json = _write_set(
        synth,
        str(tmp_path / "b"),
        [(0, gt, [_seg(2, 1, 2, iscrowd=1), _seg(3, 1, 2, iscrowd=1)])],
        [(0, pred, [_seg(10, 1), _seg(11, 1)])],
    )
    res = pq_compute(gt_json, pred_json, num_workers=1)
    assert res["Things"]["n"] == 1 and res["per_class"][1]["pq"] == 0.0


def _reference_pq(gt_maps, pred_maps, categories):
    """Straightforward PQ: boolean masks and loops over every pair of segments."""
    stats = {c["id"]: {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0} for c in categories}
    for (gt, gt_segs), (pred, pred_segs) in zip(gt_maps, pred_maps):
        void = gt == 0
        matched_gt, matched_pred = [], []
        for g in gt_segs:
            if g["iscrowd"]:
                continue
            g_mask = gt == g["id"]
            for p in pred_segs:
                if p["category_id"] != g["category_id"]:
                    continue
                p_mask = pred == p["id"]
                inter = np.sum(g_mask & p_mask)
                union = np.sum(g_mask | p_mask) - np.sum(p_mask & void)
                if union > 0 and inter / union > 0.5:
                    stats[g["category_id"]]["tp"] += 1
                    stats[g["category_id"]]["iou"] += inter / union
                    matched_gt.append(g["id"])
                    matched_pred.append(p["id"])
        for g in gt_segs:
            if not g["iscrowd"] and g["id"] not in matched_gt:
                stats[g["category_id"]]["fn"] += 1
        for p in pred_segs:
            if p["id"] in matched_pred:
                continue
            p_mask = pred == p["id"]
            crowd = np.zeros_like(void)
            for g in gt_segs:
                if g["iscrowd"] and g["category_id"] == p["category_id"]:
                    crowd |= gt == g["id"]
            if np.sum(p_mask & (void | crowd)) / np.sum(p_mask) <= 0.5:
                stats[p["category_id"]]["fp"] += 1

    def average(cats):
        values = []
        for c in cats:
            s = stats[c["id"]]
            if s["tp"] + s["fp"] + s["fn"] == 0:
                continue
            d = s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"]
            values.append((s["iou"] / d, s["iou"] / s["tp"] if s["tp"] else 0.0, s["tp"] / d))
        v = np.array(values)
        return {"pq": v[:, 0].mean(), "sq": v[:, 1].mean(), "rq": v[:, 2].mean(), "n": len(v)}

    return {
        "All": average(categories),
        "Things": average([c for c in categories if c["isthing"]]),
        "Stuff": average([c for c in categories if not c["isthing"]]),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_on_random_sets(random_panoptic_set, synth, seed):
    gt_json, pred_json, gt_maps, pred_maps = random_panoptic_set(seed, 12)
    # The generated sets must exercise crowd, VOID and a spread of IoUs around 0.5.
    assert any(s["iscrowd"] for _, segs in gt_maps for s in segs)
    assert any((gt == 0).any() for gt, _ in gt_maps)
    res = pq_compute(gt_json, pred_json, num_workers=1)
    ref = _reference_pq(gt_maps, pred_maps, synth.CATEGORIES)
    for group in ("All", "Things", "Stuff"):
        assert res[group]["n"] == ref[group]["n"]
        for key in ("pq", "sq", "rq"):
            assert res[group][key] == pytest.approx(ref[group][key], rel=1e-12, abs=1e-12)
    assert 0.05 < res["All"]["pq"] < 0.95


def test_two_processes_equal_one(random_panoptic_set):
    gt_json, pred_json, _, _ = random_panoptic_set(5, 16)
    one = pq_compute(gt_json, pred_json, num_workers=1)
    two = pq_compute(gt_json, pred_json, num_workers=2)
    assert one["per_class"].keys() == two["per_class"].keys()
    for cat, values in one["per_class"].items():
        assert values == pytest.approx(two["per_class"][cat], rel=1e-12)
    for group in ("All", "Things", "Stuff"):
        assert one[group] == pytest.approx(two[group], rel=1e-12)


def test_default_folders_and_explicit_folders(random_panoptic_set):
    gt_json, pred_json, _, _ = random_panoptic_set(3, 3)
    root = os.path.dirname(gt_json)
    # Defaults: the JSON path without ".json" ("gt.json" -> "gt/", "pred.json" -> "pred/").
    a = pq_compute(gt_json, pred_json, num_workers=1)
    os.rename(os.path.join(root, "pred"), os.path.join(root, "elsewhere"))
    with pytest.raises(ValueError, match="pred_folder"):
        pq_compute(gt_json, pred_json, num_workers=1)
    b = pq_compute(gt_json, pred_json, pred_folder=os.path.join(root, "elsewhere"), num_workers=1)
    assert a == b


# ---------------------------------------------------------------------------------------------
# Malformed input: each is rejected with a ValueError naming the image and the segment.


def _malformed_case(tmp_path, synth, mutate):
    """A valid 1-image set (image id 42); ``mutate(gt, gt_segs, pred, pred_segs)`` breaks it."""
    gt = np.array([[1, 1, 2], [1, 1, 2]])
    gt_segs = [_seg(1, 1, 4), _seg(2, 7, 2)]
    pred = np.array([[10, 10, 11], [10, 10, 11]])
    pred_segs = [_seg(10, 1), _seg(11, 7)]
    gt, gt_segs, pred, pred_segs = mutate(gt, gt_segs, pred, pred_segs)
    return _write_set(synth, str(tmp_path), [(42, gt, gt_segs)], [(42, pred, pred_segs)])


def test_valid_base_case(tmp_path, synth):
    gt_json, pred_json = _malformed_case(tmp_path, synth, lambda *a: a)
    assert pq_compute(gt_json, pred_json, num_workers=1)["All"]["pq"] == 1.0


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        # unknown category id in a prediction
        (
            lambda g, gs, p, ps: (g, gs, p, [_seg(10, 99), _seg(11, 7)]),
            r"image 42: predicted segment 10 has unknown category_id 99",
        ),
        # unknown category id in the GT
        (
            lambda g, gs, p, ps: (g, [_seg(1, 98, 4), _seg(2, 7, 2)], p, ps),
            r"image 42: ground-truth segment 1 has unknown category_id 98",
        ),
        # duplicate segment id in the prediction JSON
        (
            lambda g, gs, p, ps: (g, gs, p, ps + [_seg(11, 1)]),
            r"image 42: duplicate predicted segment id 11",
        ),
        # duplicate segment id in the GT JSON
        (
            lambda g, gs, p, ps: (g, gs + [_seg(2, 7, 2)], p, ps),
            r"image 42: duplicate ground-truth segment id 2",
        ),
        # predicted segment listed in the JSON but absent from the PNG
        (
            lambda g, gs, p, ps: (g, gs, p, ps + [_seg(12, 9)]),
            r"image 42: predicted segment id\(s\) \[12\] are in the JSON .* no pixels",
        ),
        # GT segment listed in the JSON but absent from the PNG
        (
            lambda g, gs, p, ps: (g, gs + [_seg(3, 9, 5)], p, ps),
            r"image 42: ground-truth segment id\(s\) \[3\] are in the JSON",
        ),
        # predicted PNG holds an id that the JSON does not list
        (
            lambda g, gs, p, ps: (g, gs, np.where(p == 11, 13, p), ps[:1] + [_seg(11, 7)]),
            r"image 42: predicted segment id\(s\) \[13\] appear in .* but not in the JSON",
        ),
        # GT PNG holds an id that the JSON does not list
        (
            lambda g, gs, p, ps: (np.where(g == 2, 5, g), gs, p, ps),
            r"image 42: ground-truth segment id\(s\) \[5\] appear in",
        ),
        # PNG sizes differ
        (
            lambda g, gs, p, ps: (g, gs, p[:, :2], ps[:1]),
            r"image 42: predicted PNG .* has size \(2, 2\) \(W, H\) "
            r"but the ground truth .* \(3, 2\)",
        ),
        # segment id 0 is VOID
        (
            lambda g, gs, p, ps: (g, gs, np.where(p == 11, 0, p), ps[:1] + [_seg(0, 7)]),
            r"image 42: predicted segment id 0 is reserved for VOID",
        ),
    ],
)
def test_rejects_malformed(tmp_path, synth, mutate, pattern):
    gt_json, pred_json = _malformed_case(tmp_path, synth, mutate)
    with pytest.raises(ValueError, match=pattern):
        pq_compute(gt_json, pred_json, num_workers=1)


def test_rejects_missing_prediction_and_lenient_gt(tmp_path, synth):
    gt_json, pred_json = _malformed_case(tmp_path, synth, lambda *a: a)
    with open(pred_json) as f:
        data = json.load(f)
    data["annotations"][0]["image_id"] = 7
    with open(pred_json, "w") as f:
        json.dump(data, f)
    with pytest.raises(ValueError, match="no prediction for the image with id 42"):
        pq_compute(gt_json, pred_json, num_workers=1)


def test_lenient_gt_matches_panopticapi_reading(tmp_path, synth):
    # GT PNG id 5 is not in the JSON: strict mode rejects it; lenient mode (panopticapi's) skips
    # it. Pixels of id 5 are then neither VOID nor matchable. GT 2 x 3: [1 1 5 / 1 1 5].
    # Prediction [10 10 11 / 10 10 11] with 11 sky: person 10 vs 1 -> IoU 1 (TP);
    # sky 11 has nothing to match and 0 VOID pixels -> FP. JSON sky segment 2 (area 2) is absent
    # from the PNG -> FN.
    def mutate(g, gs, p, ps):
        return np.where(g == 2, 5, g), gs, p, ps

    gt_json, pred_json = _malformed_case(tmp_path, synth, mutate)
    with pytest.raises(ValueError, match=r"\[5\]"):
        pq_compute(gt_json, pred_json, num_workers=1)
    res = pq_compute(gt_json, pred_json, num_workers=1, strict_gt=False)
    assert res["per_class"][1] == {"pq": 1.0, "sq": 1.0, "rq": 1.0}
    assert res["per_class"][7] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    assert res["Stuff"]["n"] == 1


def test_error_raised_from_worker_process(tmp_path, synth):
    gt_json, pred_json = _malformed_case(
        tmp_path, synth, lambda g, gs, p, ps: (g, gs, p, [_seg(10, 99), _seg(11, 7)])
    )
    with pytest.raises(ValueError, match="unknown category_id 99"):
        pq_compute(gt_json, pred_json, num_workers=2)


def test_cli(random_panoptic_set, capsys, tmp_path):
    gt_json, pred_json, _, _ = random_panoptic_set(4, 4)
    out_json = str(tmp_path / "res.json")
    assert (
        pq_main(
            [
                "--gt-json",
                gt_json,
                "--pred-json",
                pred_json,
                "--num-workers",
                "1",
                "--json-out",
                out_json,
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    res = pq_compute(gt_json, pred_json, num_workers=1)
    assert "{:5.1f}".format(100 * res["All"]["pq"]) in printed.splitlines()[2]
    assert printed.splitlines()[0].split() == ["|", "PQ", "SQ", "RQ", "N"]
    with open(out_json) as f:
        assert json.load(f)["All"]["pq"] == pytest.approx(res["All"]["pq"])


def test_cli_module_entry_point(random_panoptic_set):
    gt_json, pred_json, _, _ = random_panoptic_set(6, 2)
    root = os.path.dirname(gt_json)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "freqfusion_d2.evaluation.panoptic",
            "--gt-json",
            gt_json,
            "--pred-json",
            pred_json,
            "--gt-folder",
            os.path.join(root, "gt"),
            "--pred-folder",
            os.path.join(root, "pred"),
            "--num-workers",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split("|")[0].strip() for line in lines[2:5]] == ["All", "Things", "Stuff"]
    assert "RuntimeWarning" not in proc.stderr
