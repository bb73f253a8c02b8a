import json
import math
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from freqfusion_d2.evaluation import (
    BoundaryErrorEvaluator,
    COCOPanopticEvaluator,
    InstanceSegEvaluator,
    PanopticEvaluator,
    build_evaluator,
    build_sem_seg_evaluator,
    pq_compute,
)


def _panoptic_output(id_map, segments, synth, with_isthing=True):
    """``panoptic_seg`` output in the model's convention (contiguous ids of the joint space)."""
    info = []
    for s in segments:
        seg = {"id": int(s["id"]), "category_id": synth.ALL_CONTIGUOUS[s["category_id"]]}
        if with_isthing:
            seg["isthing"] = s["category_id"] in synth.THING_CONTIGUOUS
        info.append(seg)
    return torch.as_tensor(id_map.astype(np.int32)), info


def _run(evaluator, dicts, outputs):
    evaluator.reset()
    for d, out in zip(dicts, outputs):
        evaluator.process([d], [out])
    return evaluator.evaluate()


def test_panoptic_evaluator_perfect_prediction(registered, synth, tmp_path):
    name, dicts, gt_maps = registered("panoptic", n_images=3, seed=1)
    outputs = [{"panoptic_seg": _panoptic_output(gt, segs, synth)} for gt, segs in gt_maps]
    evaluator = COCOPanopticEvaluator(name, output_dir=str(tmp_path / "out"), num_workers=1)
    res = _run(evaluator, dicts, outputs)["panoptic_seg"]
    assert set(res) == {"PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"}
    assert all(v == pytest.approx(100.0) for v in res.values())
    # predictions.json uses dataset category ids and is written to output_dir.
    with open(tmp_path / "out" / "predictions.json") as f:
        anns = json.load(f)["annotations"]
    cats = {s["category_id"] for a in anns for s in a["segments_info"]}
    assert cats <= {c["id"] for c in synth.CATEGORIES}
    assert [a["file_name"] for a in anns] == [f"{d['image_id']:06d}.png" for d in dicts]
    assert PanopticEvaluator is COCOPanopticEvaluator


def test_panoptic_evaluator_equals_pq_compute(registered, synth, tmp_path):
    name, dicts, gt_maps = registered("panoptic", n_images=5, seed=2)
    rng = np.random.default_rng(0)
    outputs, pred_anns = [], []
    pred_dir = tmp_path / "pred"
    for d, (gt, segs) in zip(dicts, gt_maps):
        pred, pred_segs = synth.random_prediction(rng, gt, segs)
        outputs.append({"panoptic_seg": _panoptic_output(pred, pred_segs, synth)})
        png = f"{d['image_id']}.png"
        synth.write_png(str(pred_dir / png), pred)
        pred_anns.append({"image_id": d["image_id"], "file_name": png, "segments_info": pred_segs})
    pred_json = str(tmp_path / "pred.json")
    synth.write_panoptic_json(pred_json, pred_anns)
    meta = MetadataCatalog.get(name)
    expected = pq_compute(meta.panoptic_json, pred_json, meta.panoptic_root, str(pred_dir), 1)

    evaluator = COCOPanopticEvaluator(name, num_workers=2)
    res = _run(evaluator, dicts, outputs)["panoptic_seg"]
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for key in ("pq", "sq", "rq"):
            assert res[key.upper() + suffix] == pytest.approx(100 * expected[group][key])
    assert 5 < res["PQ"] < 95
    assert evaluator.pq_results["per_class"] == expected["per_class"]


def test_panoptic_evaluator_label_divisor_format(registered, synth):
    # segments_info None: panoptic_img = contiguous class * label_divisor + instance, -1 = VOID.
    name, dicts, gt_maps = registered("panoptic", n_images=2, seed=3)
    outputs = []
    for gt, segs in gt_maps:
        img = np.full(gt.shape, -1, dtype=np.int64)
        for k, s in enumerate(segs):
            img[gt == s["id"]] = synth.ALL_CONTIGUOUS[s["category_id"]] * 1000 + k
        outputs.append({"panoptic_seg": (torch.as_tensor(img, dtype=torch.int32), None)})
    res = _run(COCOPanopticEvaluator(name, num_workers=1), dicts, outputs)["panoptic_seg"]
    assert res["PQ"] == pytest.approx(100.0) and res["PQ_th"] == pytest.approx(100.0)


def _instances_from(gt, segs, synth, rng=None, contiguous=None):
    """Instances for the thing segments; with rng: shifted masks, random scores, extra FPs."""
    contiguous = contiguous or synth.ALL_CONTIGUOUS
    masks, classes = [], []
    for s in segs:
        if s["category_id"] in synth.THING_CONTIGUOUS and not s["iscrowd"]:
            m = gt == s["id"]
            if rng is not None:
                m = np.roll(m, tuple(rng.integers(-2, 3, size=2)), axis=(0, 1))
            masks.append(m)
            classes.append(contiguous[s["category_id"]])
    if rng is not None:
        for _ in range(2):
            m = np.zeros(gt.shape, bool)
            y, x = rng.integers(0, gt.shape[0] - 6), rng.integers(0, gt.shape[1] - 6)
            m[y : y + 6, x : x + 6] = True
            masks.append(m)
            classes.append(contiguous[int(rng.choice(synth.THING_IDS))])
    inst = Instances(gt.shape)
    masks_t = torch.as_tensor(np.array(masks, dtype=bool).reshape(-1, *gt.shape))
    inst.pred_masks = masks_t
    boxes = torch.zeros(len(masks), 4)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(ys):
            boxes[i] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    inst.pred_boxes = Boxes(boxes)
    inst.scores = (
        torch.ones(len(masks)) if rng is None else torch.as_tensor(rng.random(len(masks)))
    ).float()
    inst.pred_classes = torch.as_tensor(classes, dtype=torch.int64)
    return inst


def test_instance_evaluator_equals_pycocotools(registered, synth):
    # Mask2Former style: thing classes are 0, 1, 2 of the joint space {1:0, 3:1, 5:2, 7:3, ...}.
    # Use a space where thing ids are not 0..K-1 to exercise the remapping.
    name, dicts, gt_maps = registered("panoptic", n_images=6, seed=4, size=(40, 48))
    shifted = {cid: 2 * i + 1 for i, cid in enumerate(synth.THING_IDS)}  # things -> 1, 3, 5
    meta = MetadataCatalog.get(name)
    rng = np.random.default_rng(1)
    outputs = [
        {"instances": _instances_from(gt, segs, synth, rng, contiguous=shifted)}
        for gt, segs in gt_maps
    ]
    # Direct pycocotools on the same predictions (dataset category ids, mask RLEs).
    reverse = {v: k for k, v in shifted.items()}
    dets = []
    for d, out in zip(dicts, outputs):
        inst = out["instances"]
        for m, s, c in zip(inst.pred_masks.numpy(), inst.scores.tolist(), inst.pred_classes):
            rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            dets.append(
                {
                    "image_id": d["image_id"],
                    "category_id": reverse[int(c)],
                    "segmentation": rle,
                    "score": s,
                }
            )
    coco_gt = COCO(meta.json_file)
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(dets), "segm")
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()

    # The dataset's own mapping is {1:0, 3:1, 5:2}; evaluate with a metadata whose thing ids are
    # sparse by registering a copy.
    sparse = name + "_sparse"
    DatasetCatalog.register(sparse, lambda: dicts)
    MetadataCatalog.get(sparse).set(
        json_file=meta.json_file,
        thing_classes=meta.thing_classes,
        thing_dataset_id_to_contiguous_id=shifted,
    )
    try:
        res = _run(InstanceSegEvaluator(sparse, use_fast_impl=False), dicts, outputs)["segm"]
    finally:
        DatasetCatalog.remove(sparse)
        MetadataCatalog.remove(sparse)
    for i, key in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl")):
        want = coco_eval.stats[i] * 100
        if want < 0:
            assert math.isnan(res[key])
        else:
            assert res[key] == pytest.approx(want, abs=1e-9)
    assert 10 < res["AP"] < 100
    # detectron2's COCOEvaluator refuses these sparse ids; InstanceSegEvaluator is needed.


def test_instance_evaluator_drops_stuff_predictions(registered, synth):
    # A perfect thing prediction plus one stuff-class prediction: AP stays 100.
    name, dicts, gt_maps = registered("panoptic", n_images=2, seed=5)
    outputs = []
    for gt, segs in gt_maps:
        inst = _instances_from(gt, segs, synth)
        extra = Instances(gt.shape)
        extra.pred_masks = torch.ones(1, *gt.shape, dtype=torch.bool)
        extra.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, gt.shape[1], gt.shape[0]]]))
        extra.scores = torch.ones(1)
        extra.pred_classes = torch.tensor([synth.ALL_CONTIGUOUS[7]])  # sky (stuff)
        outputs.append({"instances": Instances.cat([inst, extra])})
    res = _run(InstanceSegEvaluator(name), dicts, outputs)["segm"]
    assert res["AP"] == pytest.approx(100.0)


# ---------------------------------------------------------------------------------------------
# Semantic segmentation (SemSegEvaluator) with the ADE20K reduce-zero-label convention.


def _register_sem_seg(tmp_path, name, labels, classes, **meta):
    os.makedirs(tmp_path / name, exist_ok=True)
    dicts = []
    for i, lab in enumerate(labels):
        path = str(tmp_path / name / f"{i}.png")
        Image.fromarray(np.asarray(lab, dtype=np.uint8)).save(path)
        dicts.append(
            {
                "file_name": f"img{i}.jpg",
                "sem_seg_file_name": path,
                "image_id": i,
                "height": lab.shape[0],
                "width": lab.shape[1],
            }
        )
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(
        stuff_classes=classes, ignore_label=255, evaluator_type="sem_seg", **meta
    )
    return dicts


@pytest.fixture
def sem_seg_names():
    names = []
    yield names
    for n in names:
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)


def _one_hot(pred, num_classes):
    return torch.nn.functional.one_hot(torch.as_tensor(pred), num_classes).permute(2, 0, 1).float()


def test_sem_seg_hand_worked_and_ade_raw_labels(tmp_path, sem_seg_names):
    gt = np.array([[0, 0, 1], [1, 1, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 0]])
    # 5 valid pixels. class 0: TP 1, GT 2, predicted 2 -> IoU 1 / 3, acc 1 / 2
    # class 1: TP 2, GT 3, predicted 3 -> IoU 2 / 4, acc 2 / 3
    # mIoU (1/3 + 1/2) / 2 = 41.667; fwIoU 2/5 * 1/3 + 3/5 * 1/2 = 43.333
    # mACC (1/2 + 2/3) / 2 = 58.333; pACC 3 / 5 = 60
    sem_seg_names += ["ffd2_sem_reduced", "ffd2_sem_raw"]
    dicts = _register_sem_seg(tmp_path, "ffd2_sem_reduced", [gt], ["a", "b"])
    # Raw ADE20K labels: 0 = other (ignored), k -> k - 1.
    raw = np.where(gt == 255, 0, gt + 1)
    _register_sem_seg(tmp_path, "ffd2_sem_raw", [raw], ["a", "b"], reduce_zero_label=True)
    outputs = [{"sem_seg": _one_hot(pred, 2)}]
    for name in ("ffd2_sem_reduced", "ffd2_sem_raw"):
        res = _run(build_sem_seg_evaluator(name), dicts, outputs)["sem_seg"]
        assert res["mIoU"] == pytest.approx(100 * (1 / 3 + 1 / 2) / 2)
        assert res["fwIoU"] == pytest.approx(100 * (2 / 5 / 3 + 3 / 5 / 2))
        assert res["mACC"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)
        assert res["pACC"] == pytest.approx(60.0)
    # Without the flag the raw labels are read as classes (1 -> "b", 2 -> out of range).
    res = _run(build_sem_seg_evaluator("ffd2_sem_raw", raw_ade_labels=False), dicts, outputs)
    assert res["sem_seg"]["mIoU"] != pytest.approx(100 * (1 / 3 + 1 / 2) / 2)


# ---------------------------------------------------------------------------------------------
# build_evaluator


def _cfg(arch, mask_former=None, boundary=None):
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = arch
    if mask_former is not None:
        cfg.MODEL.MASK_FORMER = CN({"TEST": CN(mask_former)})
    if boundary is not None:
        cfg.TEST.BOUNDARY_EVAL = CN(boundary)
    return cfg


def _types(evaluators):
    return [type(e).__name__ for e in evaluators._evaluators]


def test_build_evaluator_dispatch(registered, tmp_path, sem_seg_names):
    name, _, _ = registered("panoptic", n_images=1)
    out = str(tmp_path / "inference")
    assert _types(build_evaluator(_cfg("PanopticFPN"), name, out)) == [
        "COCOPanopticEvaluator",
        "COCOEvaluator",
        "SemSegEvaluator",
    ]
    all_on = {"SEMANTIC_ON": True, "INSTANCE_ON": True, "PANOPTIC_ON": True}
    assert _types(build_evaluator(_cfg("MaskFormer", all_on), name, out)) == [
        "COCOPanopticEvaluator",
        "InstanceSegEvaluator",
        "SemSegEvaluator",
    ]
    # Flags not declared: Mask2Former's defaults (semantic only).
    assert _types(build_evaluator(_cfg("MaskFormer", {}), name, out)) == ["SemSegEvaluator"]
    only_pan = {"SEMANTIC_ON": False, "INSTANCE_ON": False, "PANOPTIC_ON": True}
    evs = build_evaluator(_cfg("MaskFormer", only_pan, {"ENABLED": True, "BAND_KERNEL": 9}), name)
    assert _types(evs) == ["COCOPanopticEvaluator", "BoundaryErrorEvaluator"]
    assert evs._evaluators[1]._source == "panoptic" and evs._evaluators[1]._band_kernel == 9
    assert _types(build_evaluator(_cfg("GeneralizedRCNN"), name, out)) == ["COCOEvaluator"]

    sem_seg_names.append("ffd2_sem_dispatch")
    _register_sem_seg(tmp_path, "ffd2_sem_dispatch", [np.zeros((4, 4))], ["a", "b"])
    assert _types(build_evaluator(_cfg("SemanticSegmentor"), "ffd2_sem_dispatch", out)) == [
        "SemSegEvaluator"
    ]
    cfg = _cfg("MaskFormer", all_on)
    cfg.TEST.BOUNDARY_EVAL = True
    assert _types(build_evaluator(cfg, "ffd2_sem_dispatch", out)) == [
        "SemSegEvaluator",
        "BoundaryErrorEvaluator",
    ]

    sem_seg_names.append("ffd2_coco_dispatch")
    MetadataCatalog.get("ffd2_coco_dispatch").set(
        evaluator_type="coco", json_file=MetadataCatalog.get(name).json_file
    )
    DatasetCatalog.register("ffd2_coco_dispatch", lambda: [])
    assert _types(build_evaluator(_cfg("GeneralizedRCNN"), "ffd2_coco_dispatch", out)) == [
        "COCOEvaluator"
    ]
    assert _types(build_evaluator(_cfg("MaskFormer", all_on), "ffd2_coco_dispatch", out)) == [
        "InstanceSegEvaluator"
    ]

    sem_seg_names.append("ffd2_unknown_dispatch")
    MetadataCatalog.get("ffd2_unknown_dispatch").set(evaluator_type="nonsense")
    DatasetCatalog.register("ffd2_unknown_dispatch", lambda: [])
    with pytest.raises(ValueError, match="ffd2_unknown_dispatch.*nonsense"):
        build_evaluator(_cfg("PanopticFPN"), "ffd2_unknown_dispatch", out)


def test_build_evaluator_end_to_end(registered, synth, tmp_path):
    # A Mask2Former-style model that predicts the GT exactly: PQ, mask AP, mIoU are 100 and the
    # boundary errors 0.
    name, dicts, gt_maps = registered("panoptic", n_images=3, seed=6)
    all_on = {"SEMANTIC_ON": True, "INSTANCE_ON": True, "PANOPTIC_ON": True}
    cfg = _cfg("MaskFormer", all_on, {"ENABLED": True})
    evaluators = build_evaluator(cfg, name, str(tmp_path / "inference"))
    outputs = []
    for gt, segs in gt_maps:
        sem = np.zeros(gt.shape, dtype=np.int64)
        for s in segs:
            sem[gt == s["id"]] = synth.ALL_CONTIGUOUS[s["category_id"]]
        outputs.append(
            {
                "panoptic_seg": _panoptic_output(gt, segs, synth),
                "sem_seg": _one_hot(sem, len(synth.CATEGORIES)),
                "instances": _instances_from(gt, segs, synth),
            }
        )
    res = _run(evaluators, dicts, outputs)
    assert res["panoptic_seg"]["PQ"] == pytest.approx(100.0)
    assert res["segm"]["AP"] == pytest.approx(100.0)
    assert res["sem_seg"]["mIoU"] == pytest.approx(100.0)
    assert res["sem_seg_boundary"]["BIoU"] == pytest.approx(100.0)
    assert res["sem_seg_boundary"]["FErr"] == pytest.approx(0.0)
    assert isinstance(evaluators._evaluators[-1], BoundaryErrorEvaluator)
    assert isinstance(evaluators._evaluators[1], COCOEvaluator)
