import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from freqfusion_d2.evaluation import BoundaryErrorEvaluator, COCOPanopticEvaluator
from freqfusion_d2.evaluation.boundary_evaluation import (
    boundary_error_counts,
    boundary_error_metrics,
    edge_band,
    label_edges,
)


def _metrics(pred, gt, num_classes=2, **kwargs):
    return boundary_error_metrics(boundary_error_counts(pred, gt, num_classes, 255, **kwargs))


def _check(m, **expected):
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(m[key]), key
        else:
            assert m[key] == pytest.approx(value, abs=5e-6), key


def test_edges_and_band_small():
    # Labels [0 0 1 1]: Laplacian (reflect-101 border) = [0, 1, -1, 0] -> edges at columns 1, 2.
    lab = np.array([[0, 0, 1, 1]] * 3)
    np.testing.assert_array_equal(label_edges(lab)[0], [False, True, True, False])
    # A 1-px stripe of 5 between 4 and 6 cancels: 4 + 6 - 2 * 5 = 0 (only its neighbours are
    # edges); the "neighbor" mode flags it.
    stripe = np.array([[4, 4, 5, 6, 6]] * 3)
    np.testing.assert_array_equal(label_edges(stripe)[1], [False, True, False, True, False])
    np.testing.assert_array_equal(
        label_edges(stripe, mode="neighbor")[1], [False, True, True, True, False]
    )
    # Labels wrap at 256 in the compatible mode: 1 and 257 look equal.
    assert not label_edges(np.array([[1, 257], [1, 257]])).any()
    assert label_edges(np.array([[1, 257], [1, 257]]), mode="neighbor").all()
    # A single edge pixel dilated by a 3 x 3 square; zero padding at the border.
    e = np.zeros((4, 4), bool)
    e[0, 0] = True
    np.testing.assert_array_equal(edge_band(e, 3).nonzero(), ([0, 0, 1, 1], [0, 1, 0, 1]))
    with pytest.raises(ValueError, match="band_kernel"):
        edge_band(e, 4)
    with pytest.raises(ValueError, match="mode"):
        label_edges(lab, mode="sobel")


def test_reference_vector_shift():
    # G: columns >= 32 are class 1. P: columns >= 35 are class 1. 64 x 64.
    # GT edges: columns 31, 32 -> GT band 24..39; P edges 34, 35 -> P band 27..42.
    # R_B = 24..42: GT 0 on 24..31 (8 cols), GT 1 on 32..42 (11); P 0 on 24..34, P 1 on 35..42.
    #   IoU_0 = 8 / (8 + 11 - 8) = 8/11, IoU_1 = 8 / (11 + 8 - 8) = 8/11 -> BIoU 8/11
    #   Acc_0 = 8/8, Acc_1 = 8/11 -> BAcc 0.86364
    # R_F = 27..42: Acc_0 = 5/5, Acc_1 = 8/11 -> FErr = 1 - (1 + 8/11) / 2 = 3/22
    # R_M = 24..39: Acc_0 = 8/8, Acc_1 = 5/8 -> MErr = 0.1875; R_D = 27..39: same -> 0.1875
    g = np.zeros((64, 64), np.int64)
    g[:, 32:] = 1
    p = np.zeros((64, 64), np.int64)
    p[:, 35:] = 1
    m = _metrics(p, g)
    _check(m, BIoU=8 / 11, BAcc=(1 + 8 / 11) / 2, FErr=3 / 22, MErr=0.1875, DErr=0.1875)
    np.testing.assert_allclose(m["per_class_BIoU"], [8 / 11, 8 / 11])
    np.testing.assert_allclose(m["per_class_MErr"], [0.0, 3 / 8])
    # Pixel-accuracy variants: R_B 16 of 19 columns right -> 1 - 3/19 ... BAcc_a = 16/19
    _check(m, BAcc_a=16 / 19, FErr_a=3 / 16, MErr_a=3 / 16, DErr_a=3 / 13)


def test_reference_vector_false_response():
    # G all 0; P has a 10 x 10 class-1 block at rows/cols 27..36. P band: rows/cols 19..44
    # (26 x 26 = 676) minus 4 corners = 672 px, 100 of them predicted 1.
    # FErr = 100 / 672; BIoU = (572/672 + 0) / 2 (IoU_1 = 0 / 100); BAcc = 572 / 672 (Acc_1 NaN);
    # no GT edges -> MErr, DErr NaN.
    g = np.zeros((64, 64), np.int64)
    p = np.zeros((64, 64), np.int64)
    p[27:37, 27:37] = 1
    _check(
        _metrics(p, g),
        FErr=100 / 672,
        BIoU=572 / 672 / 2,
        BAcc=572 / 672,
        MErr=float("nan"),
        DErr=float("nan"),
    )


def test_reference_vector_merging():
    g = np.zeros((64, 64), np.int64)
    g[22:42, 16:31] = 1
    g[22:42, 33:48] = 1
    p = np.zeros((64, 64), np.int64)
    p[22:42, 16:48] = 1
    _check(_metrics(p, g), BIoU=0.95096, BAcc=0.98221, FErr=0.01434, MErr=0.01779, DErr=0.01434)


def test_reference_vector_ignore_border():
    # G: columns >= 16 are 255 (ignore); P all 0. The GT edge against ignore makes a band, but
    # ignore pixels are excluded: all counted pixels are right; P has no edges -> FErr, DErr NaN.
    g = np.zeros((64, 64), np.int64)
    g[:, 16:] = 255
    p = np.zeros((64, 64), np.int64)
    _check(_metrics(p, g), BIoU=1.0, BAcc=1.0, MErr=0.0, FErr=float("nan"), DErr=float("nan"))


def test_parity_with_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(5, 40, size=2)
        lab = rng.integers(0, 4, size=(h, w))
        lab = np.kron(lab, np.ones((2, 2), np.int64))[:h, :w]  # blocky, with 1-px details
        lab[rng.random((h, w)) < 0.05] = 255
        ref = cv2.Laplacian(lab.astype(np.uint8), cv2.CV_16S, ksize=1) != 0
        np.testing.assert_array_equal(label_edges(lab), ref)
        band = cv2.dilate(ref.astype(np.uint8), np.ones((15, 15), np.uint8), iterations=1) > 0
        np.testing.assert_array_equal(edge_band(ref, 15), band)


def test_ade_raw_compat_gt_edges():
    # detectron2's ADE20K layout stores "other" as 255; the raw labels are (gt + 1) % 256 with
    # "other" = 0. Centre pixel: reduced neighbours 0, 0, 255, 1 around 0 -> Laplacian 256, an
    # edge; raw neighbours 1, 1, 0, 2 around 1 -> 1 + 1 + 0 + 2 - 4 = 0, not an edge.
    gt = np.array([[0, 0, 0], [255, 0, 1], [0, 0, 0]])
    raw = (gt + 1) & 255
    assert label_edges(gt)[1, 1] and not label_edges(raw)[1, 1]
    pred = np.zeros_like(gt)
    # band_kernel 1: the GT band is the edge set itself; R_M counts its non-ignored pixels.
    compat = boundary_error_counts(pred, gt, 2, 255, band_kernel=1, gt_edge_labels=raw)
    plain = boundary_error_counts(pred, gt, 2, 255, band_kernel=1)
    assert compat[2, 1].sum() == (label_edges(raw) & (gt != 255)).sum()
    assert plain[2, 1].sum() == (label_edges(gt) & (gt != 255)).sum()
    assert compat[2, 1, 0] == plain[2, 1, 0] - 1  # the centre (class 0) drops out


def one_hot(labels):
    return torch.nn.functional.one_hot(torch.as_tensor(labels), 2).permute(2, 0, 1)


def _register(tmp_path, name, gts, classes):
    dicts = []
    os.makedirs(tmp_path / name, exist_ok=True)
    for i, gt in enumerate(gts):
        path = str(tmp_path / name / f"{i}.png")
        Image.fromarray(gt.astype(np.uint8)).save(path)
        dicts.append({"file_name": f"{name}_{i}.jpg", "sem_seg_file_name": path, "image_id": i})
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(stuff_classes=classes, ignore_label=255, evaluator_type="sem_seg")
    return dicts


def test_evaluator_end_to_end(tmp_path):
    # Two images: the shift vector (per-class counts add up over images) and a perfect one.
    g = np.zeros((64, 64), np.int64)
    g[:, 32:] = 1
    p = np.zeros((64, 64), np.int64)
    p[:, 35:] = 1
    name = "ffd2_boundary_e2e"
    dicts = _register(tmp_path, name, [g, g], ["bg", "fg"])
    try:
        ev = BoundaryErrorEvaluator(name)
        ev.reset()
        ev.process(dicts[:1], [{"sem_seg": one_hot(p).float()}])
        ev.process(dicts[1:], [{"sem_seg": one_hot(g).float()}])
        res = ev.evaluate()["sem_seg_boundary"]
        # Image 2 (perfect, GT band 24..39 = 16 columns of which 8 per class) adds 8 columns
        # of TP to each class in R_B, R_M (both bands = GT band there) and R_F, R_D.
        # R_B: IoU_0 = (8 + 8) / (16 + 19 - 16) = 16/19 for both classes.
        assert res["BIoU"] == pytest.approx(100 * 16 / 19)
        assert res["BIoU-bg"] == pytest.approx(100 * 16 / 19)
        # R_M: Acc_1 = (5 + 8) / (8 + 8) -> MErr = (0 + 3/16) / 2
        assert res["MErr"] == pytest.approx(100 * 3 / 32)
        assert res["MErr-fg"] == pytest.approx(100 * 3 / 16)
        assert set(k for k in res if "-" not in k) == {
            "BIoU",
            "BAcc",
            "FErr",
            "MErr",
            "DErr",
            "BAcc_a",
            "FErr_a",
            "MErr_a",
            "DErr_a",
        }

        # Panoptic source: segments painted with their category ids; VOID counts as no class.
        ev = BoundaryErrorEvaluator(name, source="panoptic")
        ev.reset()
        pan = torch.as_tensor(np.where(p == 1, 7, 3))
        ev.process(
            dicts[:1],
            [{"panoptic_seg": (pan, [{"id": 3, "category_id": 0}, {"id": 7, "category_id": 1}])}],
        )
        assert ev.evaluate()["sem_seg_boundary"]["BIoU"] == pytest.approx(100 * 8 / 11)
        with pytest.raises(ValueError, match="source"):
            BoundaryErrorEvaluator(name, source="instances")
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


_DIST_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.engine import launch
    from detectron2.utils import comm
    from freqfusion_d2.evaluation import BoundaryErrorEvaluator, COCOPanopticEvaluator

    def worker(spec_file, out_file):
        with open(spec_file) as f:
            spec = json.load(f)
        DatasetCatalog.register(spec["name"], lambda: spec["dicts"])
        meta = spec["meta"]
        for key in ("thing_dataset_id_to_contiguous_id", "stuff_dataset_id_to_contiguous_id"):
            meta[key] = {int(k): v for k, v in meta[key].items()}
        MetadataCatalog.get(spec["name"]).set(**meta)
        evs = [COCOPanopticEvaluator(spec["name"], num_workers=1),
               BoundaryErrorEvaluator(spec["name"])]
        for ev in evs:
            ev.reset()
        rank, world = comm.get_rank(), comm.get_world_size()
        for i in range(rank, len(spec["dicts"]), world):
            out = spec["outputs"][i]
            pan = (torch.tensor(out["panoptic"]), out["segments_info"])
            sem = torch.nn.functional.one_hot(torch.tensor(out["sem"]), spec["num_classes"])
            o = {"panoptic_seg": pan, "sem_seg": sem.permute(2, 0, 1).float()}
            for ev in evs:
                ev.process([spec["dicts"][i]], [o])
        results = {}
        for ev in evs:
            r = ev.evaluate()
            if r is not None:
                results.update(r)
        if comm.is_main_process():
            with open(out_file, "w") as f:
                json.dump(results, f)
        else:
            assert not results
        # Leave together: a rank exiting while gloo still serves the other one can abort it.
        comm.synchronize()
        torch.distributed.destroy_process_group()

    if __name__ == "__main__":
        launch(worker, int(sys.argv[3]), dist_url="auto", args=(sys.argv[1], sys.argv[2]))
    """)


def test_distributed_equals_single_process(registered, synth, tmp_path):
    name, dicts, gt_maps = registered("panoptic", n_images=4, seed=7)
    meta = MetadataCatalog.get(name)
    rng = np.random.default_rng(3)
    outputs = []
    for gt, segs in gt_maps:
        pred, pred_segs = synth.random_prediction(rng, gt, segs)
        sem = np.zeros(gt.shape, np.int64)
        info = []
        for s in pred_segs:
            c = synth.ALL_CONTIGUOUS[s["category_id"]]
            sem[pred == s["id"]] = c
            info.append(
                {
                    "id": s["id"],
                    "category_id": c,
                    "isthing": s["category_id"] in synth.THING_CONTIGUOUS,
                }
            )
        outputs.append({"panoptic": pred.tolist(), "segments_info": info, "sem": sem.tolist()})
    keys = (
        "evaluator_type",
        "panoptic_json",
        "panoptic_root",
        "stuff_classes",
        "thing_classes",
        "thing_dataset_id_to_contiguous_id",
        "stuff_dataset_id_to_contiguous_id",
        "ignore_label",
        "label_divisor",
    )
    spec = {
        "name": "ffd2_dist",
        "dicts": dicts,
        "outputs": outputs,
        "num_classes": len(synth.CATEGORIES),
        "meta": {k: meta.get(k) for k in keys},
    }
    spec_file, script = str(tmp_path / "spec.json"), str(tmp_path / "dist_eval.py")
    with open(spec_file, "w") as f:
        json.dump(spec, f)
    with open(script, "w") as f:
        f.write(_DIST_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out_file = str(tmp_path / "res.json")
    proc = subprocess.run(
        [sys.executable, script, spec_file, out_file, "2"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out_file) as f:
        double = json.load(f)
    # The same evaluation in this process, without distribution.
    single = {}
    for ev in (COCOPanopticEvaluator(name, num_workers=1), BoundaryErrorEvaluator(name)):
        ev.reset()
        for d, out in zip(dicts, outputs):
            sem = torch.nn.functional.one_hot(torch.tensor(out["sem"]), len(synth.CATEGORIES))
            o = {
                "panoptic_seg": (torch.tensor(out["panoptic"]), out["segments_info"]),
                "sem_seg": sem.permute(2, 0, 1).float(),
            }
            ev.process([d], [o])
        single.update(json.loads(json.dumps(ev.evaluate())))
    assert set(single) == {"panoptic_seg", "sem_seg_boundary"}
    for task in single:
        for key, value in single[task].items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                assert double[task][key] is None or math.isnan(double[task][key])
            else:
                assert double[task][key] == pytest.approx(value, rel=1e-12), (task, key)
    assert 0 < single["panoptic_seg"]["PQ"] < 100
