"""FreqFusionCheckpointer: detectron2 .pth/.pkl loading into the FreqFusion model, the report
of missing FreqFusion weights, atomic saving, verified loading and resuming past damaged
checkpoints; and the mmdet converter."""

import logging
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.modeling import build_backbone, build_model

import freqfusion_d2.modeling  # noqa: F401  (registers the models)
from freqfusion_d2.engine import FreqFusionCheckpointer, setup_cfg
from freqfusion_d2.engine.checkpoint import CheckpointError, verify_checkpoint_file
from freqfusion_d2.layers import FreqFusion
from freqfusion_d2.modeling import convert_mmdet_freqfusion_state_dict

BASE = "configs/Synthetic/panoptic_fpn_R_18_tiny.yaml"
FF = "configs/Synthetic/panoptic_fpn_R_18_tiny_freqfusion.yaml"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _model(config, seed):
    torch.manual_seed(seed)
    return build_model(setup_cfg(config))


@pytest.fixture(scope="module")
def baseline_files(tmp_path_factory):
    """A baseline (nearest-upsampling FPN) model saved as .pth and as a model-zoo .pkl."""
    out = tmp_path_factory.mktemp("ckpt")
    model = _model(BASE, seed=1)
    FreqFusionCheckpointer(model, str(out)).save("baseline")
    with open(out / "baseline.pkl", "wb") as f:
        numpy_sd = {k: v.numpy() for k, v in model.state_dict().items()}
        pickle.dump({"model": numpy_sd, "__author__": "test"}, f)
    return model.state_dict(), out


@pytest.mark.parametrize("name", ["baseline.pth", "baseline.pkl"])
def test_baseline_checkpoint_into_freqfusion_model(baseline_files, name, caplog):
    ref, out = baseline_files
    model = _model(FF, seed=2)
    fresh_ff = {k: v.clone() for k, v in model.state_dict().items() if "freqfusion" in k}
    with caplog.at_level(logging.WARNING):
        FreqFusionCheckpointer(model).load(str(out / name))
    report = [r.getMessage() for r in caplog.records if "FreqFusion module" in r.getMessage()]
    assert len(report) == 1
    for stage in (2, 3, 4):
        assert f"backbone.fpn_freqfusion{stage}" in report[0]
    state = model.state_dict()
    for k, v in ref.items():
        torch.testing.assert_close(state[k], v, msg=k)
    for k, v in fresh_ff.items():
        torch.testing.assert_close(state[k], v)


def test_freqfusion_checkpoint_round_trip_reports_nothing(tmp_path, caplog):
    src = _model(FF, seed=3)
    FreqFusionCheckpointer(src, str(tmp_path)).save("model_final")
    dst = _model(FF, seed=4)
    with caplog.at_level(logging.WARNING):
        FreqFusionCheckpointer(dst).load(str(tmp_path / "model_final.pth"))
    assert not [r for r in caplog.records if "FreqFusion module" in r.getMessage()]
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v)


class _Unpicklable:
    def state_dict(self):
        return {"fn": lambda: None}  # torch.save cannot pickle a lambda


def test_save_is_atomic(tmp_path):
    model = torch.nn.Linear(2, 2)
    FreqFusionCheckpointer(model, str(tmp_path)).save("model_0000001")
    checkpointer = FreqFusionCheckpointer(model, str(tmp_path), broken=_Unpicklable())
    with pytest.raises(Exception):
        checkpointer.save("model_0000002")
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert checkpointer.get_checkpoint_file().endswith("model_0000001.pth")
    assert "model" in torch.load(tmp_path / "model_0000001.pth", weights_only=False)


def _mmdet_state_dict(legacy: bool):
    torch.manual_seed(5)
    sd = {}
    for i in range(4):
        ff = FreqFusion(256, 256, compressed_channels=64, feature_resample=True)
        for k, v in ff.state_dict().items():
            if legacy:
                k = k.replace("hr_direct_scale.", "hr_scope.").replace(".direct_scale.", ".scope.")
            sd[f"neck.alignment.{i}.{k}"] = v
    for i in range(5):
        sd[f"neck.lateral_convs.{i}.conv.weight"] = torch.rand(256, 8, 1, 1)
        sd[f"neck.fpn_convs.{i}.conv.weight"] = torch.rand(256, 256, 3, 3)
    sd["backbone.layer1.0.conv1.weight"] = torch.rand(64, 64, 1, 1)
    sd["backbone.layer1.0.bn1.running_mean"] = torch.rand(64)
    sd["backbone.layer1.0.downsample.1.weight"] = torch.rand(256)
    sd["backbone.bn1.num_batches_tracked"] = torch.tensor(3)
    sd["rpn_head.rpn_conv.weight"] = torch.rand(256, 256, 3, 3)
    return sd


@pytest.mark.parametrize("legacy", [False, True])
def test_convert_mmdet_freqfusion(legacy):
    sd = _mmdet_state_dict(legacy)
    out, counts = convert_mmdet_freqfusion_state_dict({"state_dict": sd}, backbone=True)
    cfg = setup_cfg(
        "configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x_freqfusion.yaml",
        ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"],
    )
    target = {"backbone." + k: v for k, v in build_backbone(cfg).state_dict().items()}
    ff_keys = {k for k in target if k.startswith("backbone.fpn_freqfusion")}
    assert {k for k in out if "freqfusion" in k} == ff_keys  # alignment.3 dropped
    for k in ff_keys:
        assert out[k].shape == target[k].shape
    assert "backbone.fpn_lateral2.weight" in out and "backbone.fpn_output5.weight" in out
    assert "backbone.fpn_lateral6.weight" not in out
    assert out["backbone.bottom_up.res2.0.conv1.weight"] is sd["backbone.layer1.0.conv1.weight"]
    assert "backbone.bottom_up.res2.0.conv1.norm.running_mean" in out
    assert "backbone.bottom_up.res2.0.shortcut.norm.weight" in out
    assert counts["skipped"] == len(sd) - len(out)
    assert not any("rpn" in k or "scope" in k for k in out)


def test_convert_mmdet_extra_p6_and_script(tmp_path):
    sd = _mmdet_state_dict(legacy=True)
    out, _ = convert_mmdet_freqfusion_state_dict(sd, extra_p6=True)
    assert {k.split(".")[1] for k in out if "freqfusion" in k} == {
        f"fpn_freqfusion{s}" for s in (2, 3, 4, 5)
    }
    assert "backbone.fpn_lateral6.weight" in out and "backbone.fpn_output6.weight" in out
    src, dst = tmp_path / "mmdet.pth", tmp_path / "d2.pth"
    torch.save({"meta": {}, "state_dict": sd}, src)
    subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "convert_mmdet_freqfusion.py"),
            str(src),
            str(dst),
        ],
        check=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
    )
    converted = torch.load(dst, weights_only=False)
    assert "backbone.fpn_freqfusion4.dysampler.direct_scale.weight" in converted["model"]


def _linear(seed):
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 2)


def test_resume_skips_damaged_checkpoints(tmp_path, caplog):
    saved = {}
    for it in (1, 3, 5):
        model = _linear(it)
        FreqFusionCheckpointer(model, str(tmp_path)).save(f"model_{it:07d}", iteration=it)
        saved[it] = model.state_dict()
        os.utime(tmp_path / f"model_{it:07d}.pth", (it, it))  # written in this order
    # model_0000005 cut short, model_0000003 with a flipped byte, a write killed half-way.
    last = tmp_path / "model_0000005.pth"
    last.write_bytes(last.read_bytes()[:100])
    middle = tmp_path / "model_0000003.pth"
    data = bytearray(middle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    middle.write_bytes(bytes(data))
    (tmp_path / "model_0000007.pth.abc123.tmp").write_bytes(b"partial")

    model = _linear(0)
    with caplog.at_level(logging.WARNING):
        extra = FreqFusionCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 1
    for k, v in saved[1].items():
        torch.testing.assert_close(model.state_dict()[k], v)
    text = caplog.text
    assert f"checkpoint {last} is truncated or corrupt" in text
    assert f"checkpoint {middle} is corrupt (" in text
    assert "Resuming from" in text and "model_0000001.pth" in text
    assert not list(tmp_path.glob("*.tmp"))

    # Nothing complete left: an error naming --resume, and the model untouched.
    first = tmp_path / "model_0000001.pth"
    first.write_bytes(b"")
    fresh = _linear(9)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError, match="^--resume: checkpoint .*last_checkpoint names no"):
        FreqFusionCheckpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)
    for k, v in before.items():
        torch.testing.assert_close(fresh.state_dict()[k], v)


def test_load_rejects_damaged_and_foreign_files(tmp_path):
    FreqFusionCheckpointer(_linear(1), str(tmp_path)).save("good")
    good = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(good[: len(good) - 30])
    torch.save({"model": {"conv.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    model = _linear(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    checkpointer = FreqFusionCheckpointer(model)
    with pytest.raises(CheckpointError, match=r"^MODEL.WEIGHTS: checkpoint .*cut.pth is trunc"):
        checkpointer.load(str(tmp_path / "cut.pth"))
    with pytest.raises(CheckpointError, match="matches none of the model's 2 weights"):
        checkpointer.load(str(tmp_path / "other.pth"))
    for k, v in before.items():
        torch.testing.assert_close(model.state_dict()[k], v)
    with pytest.raises(CheckpointError, match="does not exist"):
        verify_checkpoint_file(str(tmp_path / "absent.pth"))


def test_damaged_files_only_ever_raise_checkpoint_error(tmp_path):
    # Seeded: 40 single-bit flips and 15 truncations of a real checkpoint. A truncated file is
    # always rejected before unpickling; a flipped one is rejected, or (a bit no check covers:
    # record padding, header fields) loads the original weights; never another exception.
    source = _linear(1)
    FreqFusionCheckpointer(source, str(tmp_path)).save("good")
    data = (tmp_path / "good.pth").read_bytes()
    rng = np.random.default_rng(0)
    damaged = tmp_path / "damaged.pth"
    rejected = 0
    for i in range(55):
        if i < 15:
            damaged.write_bytes(data[: int(rng.integers(0, len(data)))])
        else:
            flipped = bytearray(data)
            flipped[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
            damaged.write_bytes(bytes(flipped))
        model = _linear(2)
        try:
            FreqFusionCheckpointer(model).load(str(damaged))
        except CheckpointError:
            rejected += 1
            continue
        assert i >= 15, f"truncation {i} was loaded"
        for k, v in source.state_dict().items():
            assert torch.equal(model.state_dict()[k], v), f"flip {i} changed {k} unnoticed"
    assert rejected >= 15 + 10
