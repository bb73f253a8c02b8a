"""train_net.py on the synthetic dataset: train + --eval-only round trip, --resume, and
2-process CPU training (gloo)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

import freqfusion_d2.modeling  # noqa: F401  (registers the models)
from freqfusion_d2.data.datasets import SYNTHETIC_COCO_ROOT
from freqfusion_d2.data.synthetic import generate_synthetic_coco

ROOT = os.path.dirname(os.path.abspath(__file__ + "/.."))
CONFIG = os.path.join(ROOT, "configs/Synthetic/panoptic_fpn_R_18_tiny_freqfusion.yaml")
M2F_CONFIG = os.path.join(
    ROOT, "configs/COCO-PanopticSegmentation/mask2former_tiny_FreqFusion_R18_synthetic_cpu.yaml"
)
FAST = ["DATALOADER.NUM_WORKERS", "0", "TEST.DETECTIONS_PER_IMAGE", "10"]


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("d2datasets")
    generate_synthetic_coco(str(root / SYNTHETIC_COCO_ROOT), num_train=4, num_val=2, seed=3)
    return str(root)


def _train_net(datasets_dir, *args, config=CONFIG):
    env = dict(os.environ, DETECTRON2_DATASETS=datasets_dir, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", config, *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def _results(out_dir):
    with open(os.path.join(out_dir, "eval_results.json")) as f:
        return json.load(f)


def _check_metrics(results):
    assert {"PQ", "SQ", "RQ", "PQ_th", "PQ_st"} <= set(results["panoptic_seg"])
    # A barely trained model may detect nothing; COCOEvaluator then reports box AP only.
    assert "AP" in results["bbox"]
    assert "mIoU" in results["sem_seg"]


def test_train_eval_only_and_resume(datasets_dir, tmp_path):
    out = str(tmp_path / "run")
    schedule = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.CHECKPOINT_PERIOD", "2"]
    _train_net(datasets_dir, *schedule, "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", out, *FAST)
    assert os.path.exists(os.path.join(out, "model_final.pth"))
    trained = _results(out)
    _check_metrics(trained)

    # --eval-only with MODEL.WEIGHTS gives the same numbers as the end-of-training evaluation.
    eval_dir = str(tmp_path / "eval")
    weights = os.path.join(out, "model_final.pth")
    _train_net(datasets_dir, "--eval-only", "MODEL.WEIGHTS", weights, "OUTPUT_DIR", eval_dir, *FAST)
    evaluated = _results(eval_dir)
    for task in ("panoptic_seg", "sem_seg"):
        for k, v in trained[task].items():
            assert evaluated[task][k] == pytest.approx(v, abs=1e-6, nan_ok=True), (task, k)

    # --resume continues from the last checkpoint (iteration 1 was the last one run).
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read().strip() == "model_final.pth"
    log = _train_net(
        datasets_dir, "--resume", *schedule, "SOLVER.MAX_ITER", "4", "OUTPUT_DIR", out, *FAST
    )
    assert "Starting training from iteration 2" in log
    final = torch.load(os.path.join(out, "model_final.pth"), weights_only=False)
    assert final["iteration"] == 3
    assert os.path.exists(os.path.join(out, "model_0000001.pth"))
    assert os.path.exists(os.path.join(out, "model_0000003.pth"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the CPU (gloo) path")
def test_two_process_cpu_training(datasets_dir, tmp_path):
    out = str(tmp_path / "ddp")
    log = _train_net(
        datasets_dir,
        "--num-gpus",
        "2",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.MAX_ITER",
        "2",
        "OUTPUT_DIR",
        out,
        *FAST,
    )
    assert "Rank of current process: 0. World size: 2" in log
    assert os.path.exists(os.path.join(out, "model_final.pth"))
    _check_metrics(_results(out))


def test_mask2former_train_then_eval_only(datasets_dir, tmp_path):
    # The tiny Mask2Former (FreqFusion pixel decoder) through the same Trainer: AdamW recipe,
    # LSJ mapper, then PQ (panoptic), mask AP (InstanceSegEvaluator) and mIoU on the
    # *_panoptic_with_sem_seg split.
    out = str(tmp_path / "m2f")
    schedule = ["SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "SOLVER.IMS_PER_BATCH", "2"]
    _train_net(datasets_dir, *schedule, "OUTPUT_DIR", out, *FAST, config=M2F_CONFIG)
    weights = os.path.join(out, "model_final.pth")
    state = torch.load(weights, weights_only=False)["trainer"]["_trainer"]
    groups = state["optimizer"]["param_groups"]
    assert "betas" in groups[0]  # AdamW (Mask2Former recipe), not detectron2's SGD
    trained = _results(out)
    assert {"PQ", "SQ", "RQ", "PQ_th", "PQ_st"} <= set(trained["panoptic_seg"])
    assert "AP" in trained["segm"]
    assert {"mIoU", "IoU-disc", "IoU-sky"} <= set(trained["sem_seg"])

    eval_dir = str(tmp_path / "m2f_eval")
    _train_net(
        datasets_dir,
        "--eval-only",
        "MODEL.WEIGHTS",
        weights,
        "OUTPUT_DIR",
        eval_dir,
        *FAST,
        config=M2F_CONFIG,
    )
    evaluated = _results(eval_dir)
    for task in ("panoptic_seg", "segm", "sem_seg"):
        for k, v in trained[task].items():
            assert evaluated[task][k] == pytest.approx(v, abs=1e-6, nan_ok=True), (task, k)


@pytest.mark.parametrize("mode", ["auto", "semantic"])
def test_demo_writes_visualisations(datasets_dir, tmp_path, mode):
    image = os.path.join(datasets_dir, SYNTHETIC_COCO_ROOT, "val2017", "000000100000.jpg")
    env = dict(os.environ, DETECTRON2_DATASETS=datasets_dir, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "demo", "demo.py"),
            "--config-file",
            CONFIG,
            "--input",
            image,
            "--output",
            str(tmp_path / "vis"),
            "--mode",
            mode,
            "--scale",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = Image.open(tmp_path / "vis" / "000000100000.png")
    assert out.size == tuple(2 * s for s in Image.open(image).size)
