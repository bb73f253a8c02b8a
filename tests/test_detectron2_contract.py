"""The parts of detectron2 (and fvcore) that this project relies on beyond their documented API.

Each test pins one behaviour the code depends on, so that a detectron2 update that changes it
fails here, by name, instead of somewhere deep in training:

* ``FreqFusionFPN.forward`` re-implements ``FPN.forward`` with the fusion in place of "nearest
  2x upsample + add": with that fusion put back it must give detectron2's FPN outputs exactly.
* ``Trainer.__init__`` repeats ``DefaultTrainer.__init__`` (which cannot wrap a CPU model in
  DDP): both must set the same attributes, build the same hooks and save the same state.
* ``Trainer.train`` replaces ``DefaultTrainer.train`` and ``Trainer.build_hooks`` swaps its one
  ``EvalHook``.
* ``FreqFusionCheckpointer.save`` writes fvcore's checkpoint payload atomically; it overrides the
  documented extension points ``_load_file`` and ``_load_model``, and resets
  ``DetectionCheckpointer._parsed_url_during_load`` after a failed load.
* ``InstanceSegEvaluator`` overrides ``COCOEvaluator._eval_predictions`` and reads its metadata
  from ``COCOEvaluator._metadata``.
"""

import inspect
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import COCOEvaluator
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from detectron2.modeling.backbone.resnet import build_resnet_backbone

from freqfusion_d2.data.datasets import register_synthetic_coco
from freqfusion_d2.data.synthetic import generate_synthetic_coco
from freqfusion_d2.engine import FreqFusionCheckpointer, Trainer, setup_cfg
from freqfusion_d2.engine.checkpoint import CheckpointError
from freqfusion_d2.modeling import FreqFusionFPN

TINY = "configs/Synthetic/panoptic_fpn_R_18_tiny_freqfusion.yaml"
PREFIX = "contract_synthetic"


def _nearest_add(hr, lr, use_checkpoint):
    """detectron2's top-down step in FreqFusion's (mask, hr_out, lr_out) form."""
    return None, hr, F.interpolate(lr, scale_factor=2.0, mode="nearest")


@pytest.mark.parametrize(
    "in_features,top_block,fuse_type",
    [
        (["res2", "res3", "res4", "res5"], "maxpool", "sum"),
        (["res3", "res4", "res5"], "p6p7", "avg"),
    ],
)
def test_fpn_forward_is_detectron2s_with_the_fusion_swapped(in_features, top_block, fuse_type):
    cfg = setup_cfg(TINY)
    torch.manual_seed(0)
    bottom_up = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    block = LastLevelMaxPool() if top_block == "maxpool" else LastLevelP6P7(512, 32)
    kwargs = dict(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=32,
        top_block=block,
        fuse_type=fuse_type,
    )
    base = FPN(**kwargs).eval()
    ff = FreqFusionFPN(**kwargs, freqfusion_kwargs={"compress_ratio": 8}).eval()
    ff.load_state_dict(base.state_dict(), strict=False)
    ff.fusions = [_nearest_add] * len(ff.fusions)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        expected, actual = base(x), ff(x)
    assert list(actual) == list(expected)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
    assert ff.output_shape() == base.output_shape()
    assert ff.size_divisibility == base.size_divisibility
    assert ff.padding_constraints == base.padding_constraints


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    generate_synthetic_coco(str(root / "synthetic_coco"), num_train=2, num_val=1, seed=0)
    register_synthetic_coco(str(root / "synthetic_coco"), prefix=PREFIX)
    return setup_cfg(
        TINY,
        [
            "DATASETS.TRAIN",
            f"('{PREFIX}_train_panoptic_separated',)",
            "DATASETS.TEST",
            f"('{PREFIX}_val_panoptic_separated',)",
            "DATALOADER.NUM_WORKERS",
            "0",
            "OUTPUT_DIR",
            str(root / "out"),
        ],
    )


def test_trainer_builds_what_default_trainer_builds(tiny_cfg):
    ours, theirs = Trainer(tiny_cfg), DefaultTrainer(tiny_cfg)
    # The attributes DefaultTrainer.__init__ sets (its methods read _trainer, scheduler,
    # checkpointer, start_iter, max_iter, cfg); ours adds last_eval_results and data_sampler.
    assert set(vars(ours)) == set(vars(theirs)) | {"last_eval_results", "data_sampler"}
    assert type(ours._trainer) is type(theirs._trainer)
    assert [type(h) for h in ours._hooks] == [type(h) for h in theirs._hooks]
    assert sum(isinstance(h, hooks.EvalHook) for h in theirs.build_hooks()) == 1
    assert set(ours.state_dict()) == set(theirs.state_dict())
    assert set(ours.state_dict()["hooks"]) == set(theirs.state_dict()["hooks"])
    assert isinstance(ours.checkpointer, FreqFusionCheckpointer)


def test_default_trainer_code_is_the_one_mirrored():
    # Trainer.__init__ and Trainer.train repeat these two methods: any new call in them (a new
    # builder, a new attribute, a new check after training) changes the names they use.
    init_names = set(DefaultTrainer.__init__.__code__.co_names)
    assert init_names == {
        "super",
        "__init__",
        "logging",
        "getLogger",
        "isEnabledFor",
        "INFO",
        "setup_logger",
        "DefaultTrainer",
        "auto_scale_workers",
        "comm",
        "get_world_size",
        "build_model",
        "build_optimizer",
        "build_train_loader",
        "create_ddp_model",
        "SOLVER",
        "AMP",
        "ENABLED",
        "AMPTrainer",
        "SimpleTrainer",
        "_trainer",
        "build_lr_scheduler",
        "scheduler",
        "DetectionCheckpointer",
        "OUTPUT_DIR",
        "weakref",
        "proxy",
        "checkpointer",
        "start_iter",
        "MAX_ITER",
        "max_iter",
        "cfg",
        "register_hooks",
        "build_hooks",
    }, sorted(init_names)
    train_names = set(DefaultTrainer.train.__code__.co_names)
    assert train_names == {
        "super",
        "train",
        "start_iter",
        "max_iter",
        "len",
        "cfg",
        "TEST",
        "EXPECTED_RESULTS",
        "comm",
        "is_main_process",
        "hasattr",
        "verify_results",
        "_last_eval_results",
    }, sorted(train_names)


class _State:
    def __init__(self, value):
        self.value = value

    def state_dict(self):
        return {"value": self.value}


def test_checkpointer_save_payload_equals_fvcore(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    for sub in ("ours", "theirs"):
        os.makedirs(tmp_path / sub)  # fvcore's save does not create its folder
    ours = FreqFusionCheckpointer(model, str(tmp_path / "ours"), extra=_State(7))
    theirs = DetectionCheckpointer(model, str(tmp_path / "theirs"), extra=_State(7))
    ours.save("model_0000004", iteration=4)
    theirs.save("model_0000004", iteration=4)
    a = torch.load(tmp_path / "ours" / "model_0000004.pth", weights_only=False)
    b = torch.load(tmp_path / "theirs" / "model_0000004.pth", weights_only=False)
    assert set(a) == set(b) == {"model", "extra", "iteration"}
    assert a["extra"] == b["extra"] and a["iteration"] == b["iteration"]
    for k, v in b["model"].items():
        torch.testing.assert_close(a["model"][k], v)
    assert ours.get_checkpoint_file() == str(tmp_path / "ours" / "model_0000004.pth")
    with open(tmp_path / "theirs" / "last_checkpoint") as f:
        assert f.read() == "model_0000004.pth"
    assert sorted(os.listdir(tmp_path / "ours")) == sorted(os.listdir(tmp_path / "theirs"))


def test_checkpointer_load_hooks():
    # load() reads the file with _load_file(path) and applies it with _load_model(checkpoint),
    # whose result has these three fields.
    assert list(inspect.signature(DetectionCheckpointer._load_file).parameters) == [
        "self",
        "filename",
    ]
    assert list(inspect.signature(DetectionCheckpointer._load_model).parameters) == [
        "self",
        "checkpoint",
    ]
    load_names = DetectionCheckpointer.__mro__[1].load.__code__.co_names
    assert "_load_file" in load_names and "_load_model" in load_names
    model = torch.nn.Linear(2, 2)
    incompatible = DetectionCheckpointer(model)._load_model(
        {"model": {"weight": torch.zeros(2, 2), "other": torch.zeros(1)}}
    )
    assert incompatible.missing_keys == ["bias"]
    assert incompatible.unexpected_keys == ["other"]
    assert incompatible.incorrect_shapes == []


def test_detection_checkpointer_load_state_after_an_error(tmp_path):
    # FreqFusionCheckpointer.load clears _parsed_url_during_load, which
    # DetectionCheckpointer.load sets, asserts to be None on entry, and leaves set when the file
    # fails to load.
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    checkpointer = DetectionCheckpointer(torch.nn.Linear(2, 2))
    assert checkpointer._parsed_url_during_load is None
    with pytest.raises(Exception):
        checkpointer.load(str(tmp_path / "bad.pth"))
    assert checkpointer._parsed_url_during_load is not None
    with pytest.raises(AssertionError):
        checkpointer.load(str(tmp_path / "bad.pth"))
    ours = FreqFusionCheckpointer(torch.nn.Linear(2, 2))
    for _ in range(2):
        with pytest.raises(CheckpointError):
            ours.load(str(tmp_path / "bad.pth"))


def test_coco_evaluator_private_parts(tiny_cfg):
    assert list(inspect.signature(COCOEvaluator._eval_predictions).parameters) == [
        "self",
        "predictions",
        "img_ids",
    ]
    evaluator = COCOEvaluator(f"{PREFIX}_val", tasks=("segm",), distributed=False)
    assert evaluator._metadata.name == f"{PREFIX}_val"
    # The contiguous -> dataset id mapping is looked up on self._metadata with hasattr, so a
    # view that hides the attribute turns the mapping off.
    source = inspect.getsource(COCOEvaluator._eval_predictions)
    assert 'hasattr(self._metadata, "thing_dataset_id_to_contiguous_id")' in source
