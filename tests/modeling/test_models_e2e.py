"""End-to-end model smoke tests on the tiny config: eval on odd sizes, a training step with
backward, empty ground truth, and the R-CNN architectures on the FreqFusion FPN."""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

import freqfusion_d2.modeling  # noqa: F401  (registers the models)
from freqfusion_d2.engine import setup_cfg

TINY = "configs/Synthetic/panoptic_fpn_R_18_tiny_freqfusion.yaml"
ARCHS = {
    "panoptic_fpn": [],
    "mask_rcnn": ["MODEL.META_ARCHITECTURE", "GeneralizedRCNN"],
    "faster_rcnn": ["MODEL.META_ARCHITECTURE", "GeneralizedRCNN", "MODEL.MASK_ON", "False"],
}


def _model(arch):
    torch.manual_seed(0)
    cfg = setup_cfg(TINY, ARCHS[arch])
    return cfg, build_model(cfg)


def _instances(h, w, boxes, classes):
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    masks = torch.zeros(len(classes), h, w, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        masks[i, int(y0) : int(y1), int(x0) : int(x1)] = True
    inst.gt_masks = BitMasks(masks)
    return inst


def _train_inputs(empty: bool):
    h, w = 96, 120
    inputs = []
    for b in range(2):
        boxes, classes = ([], []) if empty else ([[10, 12, 40, 50], [60, 30, 100, 70]], [0, 2])
        # No things when empty: the stuff labels remain (an all-ignored map has no loss).
        sem = torch.ones((h, w), dtype=torch.long)
        sem[h // 2 :] = 2
        sem[:4] = 255
        if not empty:
            sem[12:50, 10:40] = 0
        inputs.append(
            {
                "image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8).float(),
                "instances": _instances(h, w, boxes, classes),
                "sem_seg": sem,
            }
        )
    return inputs


@pytest.mark.parametrize("arch", list(ARCHS))
def test_eval_on_odd_sizes(arch):
    cfg, model = _model(arch)
    model.eval()
    sizes = [(97, 131), (75, 121)]
    inputs = [
        {"image": torch.rand(3, h, w) * 255, "height": h + 10, "width": w + 20} for h, w in sizes
    ]
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == 2
    for (h, w), out in zip(sizes, outputs):
        assert out["instances"].image_size == (h + 10, w + 20)
        if arch == "panoptic_fpn":
            assert out["sem_seg"].shape == (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, h + 10, w + 20)
            assert out["panoptic_seg"][0].shape == (h + 10, w + 20)


@pytest.mark.parametrize(
    "arch, empty", [("panoptic_fpn", False), ("panoptic_fpn", True), ("faster_rcnn", False)]
)
def test_training_step(arch, empty):
    _, model = _model(arch)
    model.train()
    with EventStorage(0):
        losses = model(_train_inputs(empty))
        total = sum(losses.values())
        total.backward()
    assert all(torch.isfinite(v) for v in losses.values()), losses
    if arch == "panoptic_fpn":
        assert {"loss_sem_seg", "loss_mask", "loss_cls", "loss_rpn_cls"} <= set(losses)
    fusion = model.backbone.fpn_freqfusion2
    grads = [p.grad for p in fusion.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
