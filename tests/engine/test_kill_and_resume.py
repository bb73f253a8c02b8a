"""A real CPU training of the tiny synthetic Panoptic FPN killed with SIGKILL and resumed with
--resume: it continues from the last complete checkpoint with the iteration, learning rate and
images an uninterrupted run has; a truncated checkpoint is reported and skipped."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from freqfusion_d2.data.datasets import SYNTHETIC_COCO_ROOT
from freqfusion_d2.data.synthetic import generate_synthetic_coco

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HARNESS = os.path.join(ROOT, "tests", "engine", "resume_harness.py")
CONFIG = os.path.join(ROOT, "configs", "Synthetic", "panoptic_fpn_R_18_tiny.yaml")
MAX_ITER = 8
# Warm-up then a step: the learning rate differs at almost every iteration.
SCHEDULE = [
    "SOLVER.MAX_ITER",
    str(MAX_ITER),
    "SOLVER.CHECKPOINT_PERIOD",
    "2",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.WARMUP_ITERS",
    "3",
    "SOLVER.STEPS",
    "(5,)",
    "DATASETS.TEST",
    "()",
    "DATALOADER.NUM_WORKERS",
    "1",
]


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("d2datasets")
    generate_synthetic_coco(str(root / SYNTHETIC_COCO_ROOT), num_train=5, num_val=1, seed=4)
    return str(root)


def _command(record, out, *extra, die_saving=None, seed=7):
    """The harness command; resumed runs get another SEED, so that the data order they continue
    can only come from the checkpoint."""
    harness = [sys.executable, HARNESS, str(record)]
    if die_saving:
        harness += ["--die-saving", die_saving]
    opts = [*SCHEDULE, "SEED", str(seed), "OUTPUT_DIR", str(out)]
    return harness + ["--", "--config-file", CONFIG, *extra, *opts]


def _env(datasets_dir):
    return dict(os.environ, DETECTRON2_DATASETS=datasets_dir, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")


def _run(cmd, datasets_dir):
    return subprocess.run(cmd, env=_env(datasets_dir), capture_output=True, text=True, cwd=ROOT)


def _records(path):
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.endswith("\n")]
    return {r["iter"]: r for r in lines}


def _assert_same_as(reference, records):
    for it, r in records.items():
        assert r["ids"] == reference[it]["ids"], f"iteration {it}: images differ"
        assert r["lr"] == pytest.approx(reference[it]["lr"], rel=1e-12), f"iteration {it}: lr"


def _tagged(out):
    with open(os.path.join(out, "last_checkpoint")) as f:
        return os.path.join(out, f.read().strip())


def test_sigkill_then_resume_continues_exactly(datasets_dir, tmp_path):
    # The uninterrupted run.
    proc = _run(_command(tmp_path / "ref.jsonl", tmp_path / "ref"), datasets_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = _records(tmp_path / "ref.jsonl")
    assert sorted(reference) == list(range(MAX_ITER))
    assert len({r["lr"] for r in reference.values()}) >= 5

    # 1. Killed while writing model_0000005.pth: the previous checkpoint stays the last one.
    out, record = tmp_path / "run", tmp_path / "run.jsonl"
    proc = _run(_command(record, out, die_saving="model_0000005"), datasets_dir)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert _tagged(out) == str(out / "model_0000003.pth")
    assert not (out / "model_0000005.pth").exists()
    assert [n for n in os.listdir(out) if n.endswith(".tmp")]  # the half-written file
    first = _records(record)
    assert sorted(first) == [0, 1, 2, 3, 4]
    _assert_same_as(reference, first)

    # 2. Resumed, then killed from outside at some point after iteration 5 is done.
    record2 = tmp_path / "run2.jsonl"
    proc = subprocess.Popen(
        _command(record2, out, "--resume", seed=8),
        env=_env(datasets_dir),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while max(_records(record2), default=-1) < 5 and proc.poll() is None:
        assert time.monotonic() < deadline, "the resumed run did not reach iteration 5"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    second = _records(record2)
    assert min(second) == 4  # model_0000003.pth holds iteration 3
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]  # cleaned up on resume
    _assert_same_as(reference, second)

    # 3. The last checkpoint is then truncated (a copy cut short, a full disk): the next resume
    # reports it, never loads it, and starts from the newest complete one.
    damaged = _tagged(out)
    with open(damaged, "r+b") as f:
        f.truncate(os.path.getsize(damaged) // 3)
    others = [
        os.path.join(out, n)
        for n in os.listdir(out)
        if n.startswith("model_") and n.endswith(".pth") and os.path.join(out, n) != damaged
    ]
    fallback = max(others, key=os.path.getmtime)
    expected_start = torch.load(fallback, weights_only=False)["iteration"] + 1
    record3 = tmp_path / "run3.jsonl"
    proc = _run(_command(record3, out, "--resume", seed=9), datasets_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert f"checkpoint {damaged} is truncated or corrupt" in log
    assert f"Resuming from {fallback}" in log
    assert f"Starting training from iteration {expected_start}" in log
    third = _records(record3)
    assert sorted(third) == list(range(expected_start, MAX_ITER))
    _assert_same_as(reference, third)
    assert set(first) | set(second) | set(third) == set(range(MAX_ITER))
    final = torch.load(out / "model_final.pth", weights_only=False)
    assert final["iteration"] == MAX_ITER - 1
    assert (
        final["data_sampler"]["seed"]
        == torch.load(tmp_path / "ref" / "model_final.pth", weights_only=False)["data_sampler"][
            "seed"
        ]
    )
