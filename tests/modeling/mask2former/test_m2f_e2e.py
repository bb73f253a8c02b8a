"""End-to-end smoke tests of Mask2Former on the tiny CPU config (R18, 64 channels, 10 queries)."""

import math

import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage
from m2f_testing import TINY_CONFIG, TINY_FF_CONFIG, load_cfg, tiny_inputs, tiny_swin_opts

META_NAME = "m2f_tests_tiny_train"
THING_IDS = {1: 0, 2: 1, 4: 2}  # contiguous ids 0-2 are things, 3-5 stuff


def _register_metadata():
    meta = MetadataCatalog.get(META_NAME)
    if not hasattr(meta, "thing_dataset_id_to_contiguous_id"):
        meta.set(thing_dataset_id_to_contiguous_id=THING_IDS)


def build(relpath, opts=(), seed=0):
    _register_metadata()
    cfg = load_cfg(relpath, ["DATASETS.TRAIN", (META_NAME,), *opts])
    torch.manual_seed(seed)
    return build_model(cfg)


VARIANTS = {
    "r18": (TINY_CONFIG, ()),
    "freqfusion": (TINY_FF_CONFIG, ()),
    "swin": (TINY_CONFIG, tuple(tiny_swin_opts())),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def model(request):
    relpath, opts = VARIANTS[request.param]
    return build(relpath, opts)


def test_eval_two_sizes(model):
    model.eval()
    inputs = tiny_inputs()
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == 2
    k = model.sem_seg_head.num_classes
    for out, size in zip(outputs, [(96, 128), (40, 50)]):
        assert out["sem_seg"].shape == (k, *size)
        assert torch.isfinite(out["sem_seg"]).all()
        pan, segments = out["panoptic_seg"]
        assert pan.shape == size and pan.dtype == torch.int32
        assert set(pan.unique().tolist()) <= {0} | {s["id"] for s in segments}
        inst = out["instances"]
        assert isinstance(inst, Instances) and inst.image_size == size
        assert len(inst) <= 20
        assert set(inst.pred_classes.tolist()) <= set(THING_IDS.values())  # panoptic on: things
        assert inst.pred_masks.shape[1:] == size


def test_train_step_with_empty_targets(model):
    model.train()
    inputs = tiny_inputs()
    masks = torch.zeros(2, 96, 128, dtype=torch.bool)
    masks[0, 10:50, 20:90] = True
    masks[1, 60:, :] = True
    inputs[0]["instances"] = Instances((96, 128), gt_classes=torch.tensor([1, 4]), gt_masks=masks)
    inputs[1]["instances"] = Instances(
        (80, 100),
        gt_classes=torch.zeros(0, dtype=torch.int64),
        gt_masks=torch.zeros(0, 80, 100, dtype=torch.bool),
    )
    with EventStorage():
        losses = model(inputs)
    n_pred = model.sem_seg_head.predictor.num_layers + 1
    assert len(losses) == 3 * n_pred  # deep supervision: ce, mask, dice per prediction
    assert all(math.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()
    pixel_decoder = model.sem_seg_head.pixel_decoder
    grads = [p.grad for p in pixel_decoder.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    model.zero_grad(set_to_none=True)
    model.eval()


def test_instance_inference_with_more_detections_than_pairs():
    # Q * K = 10 * 6 = 60 < 100 detections: upstream's topk raises here.
    model = build(TINY_CONFIG, ["TEST.DETECTIONS_PER_IMAGE", 100]).eval()
    with torch.no_grad():
        out = model(tiny_inputs()[:1])[0]
    assert 0 < len(out["instances"]) <= 60


def test_cpu_bfloat16_autocast_keeps_pixel_decoder_float32():
    model = build(TINY_FF_CONFIG).eval()
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        features = model.backbone(x)
        assert features["res2"].dtype == torch.bfloat16  # autocast is really on
        mask_features, encoder_out, multi_scale = model.sem_seg_head.pixel_decoder.forward_features(
            features
        )
    assert mask_features.dtype == torch.float32
    assert encoder_out.dtype == torch.float32
    assert all(f.dtype == torch.float32 for f in multi_scale)
    assert [f.shape[-1] for f in multi_scale] == [2, 4, 8]
    assert all(f.is_contiguous() for f in multi_scale)


def test_panoptic_inference_merges_stuff_and_keeps_things():
    model = build(TINY_CONFIG, ["MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", 0.5])
    k = model.sem_seg_head.num_classes  # 6; index 6 = no object
    big = 20.0
    logits = torch.full((4, k + 1), -big)
    logits[0, 4] = big  # stuff class 4, left half
    logits[1, 0] = big  # thing class 0, top-right
    logits[2, 4] = big  # stuff class 4 again, bottom-right: merged into segment 1
    logits[3, k] = big  # no object: dropped
    masks = torch.full((4, 4, 4), -big)
    masks[0, :, :2] = big
    masks[1, :2, 2:] = big
    masks[2, 2:, 2:] = big
    masks[3] = big
    pan, segments = model.panoptic_inference(logits, masks)
    assert segments == [
        {"id": 1, "isthing": False, "category_id": 4},
        {"id": 2, "isthing": True, "category_id": 0},
    ]
    expected = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2], [1, 1, 1, 1], [1, 1, 1, 1]])
    assert torch.equal(pan, expected.int())
