"""Bad input to every command-line tool: one line on stderr naming the argument, the path and
what was expected, exit status 2, no traceback (unless --debug or FREQFUSION_DEBUG=1).

Most cases call the tools' entry points in this process through ``run_cli`` (what their
``__main__`` does); ``test_table_rows_as_processes`` and the cases that need a model run the
real scripts."""

import importlib.util
import json
import logging
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from freqfusion_d2.data.datasets import SYNTHETIC_COCO_ROOT
from freqfusion_d2.data.synthetic import generate_synthetic_coco
from freqfusion_d2.evaluation.panoptic.__main__ import main as pq_main
from freqfusion_d2.utils.cli import DEBUG_ENV, EXIT_INPUT_ERROR, run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FPN = os.path.join(ROOT, "configs", "Synthetic", "panoptic_fpn_R_18_tiny.yaml")
M2F = os.path.join(
    ROOT, "configs", "COCO-PanopticSegmentation", "mask2former_tiny_R18_synthetic_cpu.yaml"
)
PROG = "tool"


def _script(relative):
    name = "cli_" + relative.replace("/", "_").replace(".py", "")
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relative))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scripts():
    names = [
        "train_net.py",
        "demo/demo.py",
        "tools/convert_mmdet_freqfusion.py",
        "tools/summarize_metrics.py",
        "datasets/prepare_synthetic_coco.py",
        "datasets/prepare_panoptic_fpn.py",
        "datasets/prepare_coco_semantic_from_panoptic.py",
        "datasets/prepare_ade20k_sem_seg.py",
    ]
    return {n: _script(n) for n in names}


@pytest.fixture(autouse=True)
def _keep_logging():
    """The demo sets up detectron2's loggers (handlers, no propagation): undo it after a test."""
    names = ["detectron2", "freqfusion_d2", "fvcore", "d2"]
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in names}
    yield
    for n, (handlers, propagate) in saved.items():
        logging.getLogger(n).handlers[:] = handlers
        logging.getLogger(n).propagate = propagate


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad (and a few good) inputs, made once."""
    d = tmp_path_factory.mktemp("inputs")
    good = d / "good.pth"
    torch.save({"model": {"w": torch.arange(20000.0)}}, good)
    data = good.read_bytes()
    (d / "truncated.pth").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    (d / "flipped.pth").write_bytes(bytes(flipped))
    (d / "corrupt.pth").write_bytes(np.random.default_rng(0).bytes(1000))
    (d / "truncated.pkl").write_bytes(pickle.dumps({"model": {"w": np.zeros(100)}})[:-40])
    image = d / "image.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 80, 3), np.uint8)).save(image)
    (d / "truncated.jpg").write_bytes(image.read_bytes()[:300])
    (d / "not_an_image.jpg").write_text("hello\n")
    (d / "bad.json").write_text('{"annotations": [\n')
    (d / "bad.yaml").write_text("MODEL:\n  - [\n")
    (d / "typo.yaml").write_text(f"_BASE_: {FPN}\nMODEL:\n  FPN:\n    OUT_CHANNEL: 32\n")
    (d / "no_base.yaml").write_text("_BASE_: missing_base.yaml\n")
    return d


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("d2datasets")
    generate_synthetic_coco(str(root / SYNTHETIC_COCO_ROOT), num_train=2, num_val=1, seed=2)
    return str(root)


def _error(main, argv, capsys):
    """Runs ``main`` through run_cli; returns the one error line after checking the rest."""
    code = run_cli(main, argv, prog=PROG)
    err = capsys.readouterr().err
    assert code == EXIT_INPUT_ERROR, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(f"{PROG}: error: ")]
    assert len(lines) == 1, err
    assert err.rstrip().endswith(lines[0])
    return lines[0][len(f"{PROG}: error: ") :]


def _train(scripts, capsys, *argv):
    return _error(scripts["train_net.py"].cli, list(argv), capsys)


# ---- the table of the issue: one test per row -------------------------------------------


def test_table_config_file_missing(scripts, capsys):
    line = _train(scripts, capsys, "--config-file", "/nonexistent.yaml")
    assert line.startswith("--config-file: /nonexistent.yaml does not exist; expected a YAML")


def test_table_weights_missing(scripts, capsys, tmp_path):
    line = _train(scripts, capsys, "--config-file", FPN, "MODEL.WEIGHTS", str(tmp_path / "x.pth"))
    assert line == (
        f"MODEL.WEIGHTS: {tmp_path / 'x.pth'} does not exist; expected a checkpoint file "
        "(.pth or .pkl)"
    )


def test_table_weights_corrupt(scripts, capsys, files):
    path = files / "corrupt.pth"
    line = _train(scripts, capsys, "--config-file", FPN, "MODEL.WEIGHTS", str(path))
    assert line.startswith(f"MODEL.WEIGHTS: checkpoint {path} is corrupt or not a checkpoint")


def test_table_demo_truncated_jpeg(scripts, capsys, files, tmp_path):
    path = files / "truncated.jpg"
    argv = ["--config-file", FPN, "--input", str(path), "--output", str(tmp_path)]
    line = _error(scripts["demo/demo.py"].main, argv, capsys)
    assert line.startswith(f"--input: {path} is not a readable image (")
    assert line.endswith("; expected an image file (JPEG, PNG, ...)")


def test_table_demo_not_an_image(scripts, capsys, files, tmp_path):
    path = files / "not_an_image.jpg"
    argv = ["--config-file", FPN, "--input", str(path), "--output", str(tmp_path)]
    line = _error(scripts["demo/demo.py"].main, argv, capsys)
    assert line == f"--input: {path} is not an image; expected an image file (JPEG, PNG, ...)"


def test_table_pq_gt_json_missing(capsys, files):
    argv = ["--gt-json", "/nonexistent.json", "--pred-json", str(files / "bad.json")]
    line = _error(pq_main, argv, capsys)
    assert line.startswith("--gt-json: /nonexistent.json does not exist; expected a JSON file")


def _non_warning_lines(stderr):
    """stderr without Python's warnings (torch prints some on import)."""
    lines = stderr.strip().splitlines()
    return [
        line
        for i, line in enumerate(lines)
        if "Warning:" not in line and not (i and "Warning:" in lines[i - 1])
    ]


def test_table_rows_as_processes(files, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    env.pop(DEBUG_ENV, None)
    commands = [
        [os.path.join(ROOT, "train_net.py"), "--config-file", "/nonexistent.yaml"],
        [
            os.path.join(ROOT, "demo", "demo.py"),
            "--config-file",
            FPN,
            "--input",
            str(files / "truncated.jpg"),
            "--output",
            str(tmp_path),
        ],
        ["-m", "freqfusion_d2.evaluation.panoptic", "--gt-json", "/x.json", "--pred-json", "y"],
    ]
    for command in commands:
        proc = subprocess.run(
            [sys.executable, *command], env=env, capture_output=True, text=True, cwd=ROOT
        )
        assert proc.returncode == EXIT_INPUT_ERROR, proc.stderr
        lines = _non_warning_lines(proc.stderr)
        assert len(lines) == 1 and ": error: " in lines[0], proc.stderr
    # The traceback, on request.
    proc = subprocess.run(
        [sys.executable, *commands[2]],
        env=dict(env, **{DEBUG_ENV: "1"}),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == EXIT_INPUT_ERROR
    assert "Traceback (most recent call last)" in proc.stderr
    assert (
        proc.stderr.rstrip()
        .splitlines()[-1]
        .endswith("expected a JSON file with annotations, categories")
    )


# ---- train_net.py ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,expected",
    [
        ([], "--config-file: not given"),
        (["--config-file", ROOT + "/configs"], f"--config-file: {ROOT}/configs is a directory"),
        (
            ["--config-file", FPN, "MODEL.FREQFUSION.LOWPAS_KERNEL", "3"],
            "opts: unknown config key MODEL.FREQFUSION.LOWPAS_KERNEL "
            "(closest valid: MODEL.FREQFUSION.LOWPASS_KERNEL)",
        ),
        (
            ["--config-file", FPN, "SOLVER.BASE_LR", "fast"],
            "opts: SOLVER.BASE_LR fast: ValueError: Type mismatch",
        ),
        (["--config-file", FPN, "SOLVER.BASE_LR"], "opts: 1 values ['SOLVER.BASE_LR']"),
        (
            ["--config-file", FPN, "DATASETS.TRAIN", "('synthetic_coco_2017_trian',)"],
            "DATASETS.TRAIN: dataset 'synthetic_coco_2017_trian' is not registered "
            "(closest valid: synthetic_coco_2017_train)",
        ),
    ],
)
def test_train_net_config_and_arguments(scripts, capsys, argv, expected):
    assert _train(scripts, capsys, *argv).startswith(expected)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("bad.yaml", "is not valid YAML (ParserError"),
        (
            "typo.yaml",
            "sets the unknown config key MODEL.FPN.OUT_CHANNEL "
            "(closest valid: MODEL.FPN.OUT_CHANNELS)",
        ),
        ("no_base.yaml", "its _BASE_ "),
    ],
)
def test_train_net_bad_yaml(scripts, capsys, files, name, expected):
    line = _train(scripts, capsys, "--config-file", str(files / name))
    assert line.startswith(f"--config-file: {files / name}")
    assert expected in line


@pytest.mark.parametrize(
    "name,expected",
    [
        ("truncated.pth", "is truncated or corrupt ("),
        ("flipped.pth", "is corrupt (record good/data/0 fails its CRC check)"),
        ("truncated.pkl", "is corrupt or not a checkpoint: neither a torch.save archive nor a"),
    ],
)
def test_train_net_damaged_weights(scripts, capsys, files, name, expected):
    line = _train(scripts, capsys, "--config-file", FPN, "MODEL.WEIGHTS", str(files / name))
    assert line.startswith(f"MODEL.WEIGHTS: checkpoint {files / name} {expected}")


def test_train_net_missing_dataset_names_the_command(scripts, capsys, tmp_path, monkeypatch):
    # A synthetic dataset registered on a folder that does not exist.
    from freqfusion_d2.data.datasets import register_synthetic_coco

    register_synthetic_coco(str(tmp_path / "absent"), prefix="cli_absent")
    line = _train(
        scripts,
        capsys,
        "--config-file",
        FPN,
        "DATASETS.TRAIN",
        "('cli_absent_train_panoptic_separated',)",
    )
    assert line.startswith("DATASETS.TRAIN: Dataset 'cli_absent_train_panoptic_separated' needs")
    assert "python datasets/prepare_synthetic_coco.py" in line


def test_train_net_resume_without_a_complete_checkpoint(scripts, capsys, files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model_0000009.pth").write_bytes((files / "truncated.pth").read_bytes())
    (out / "last_checkpoint").write_text("model_0000009.pth")
    line = _train(scripts, capsys, "--config-file", FPN, "--resume", "OUTPUT_DIR", str(out))
    assert line.startswith(f"--resume: {out} has no complete checkpoint (checkpoint ")
    assert "model_0000009.pth is truncated or corrupt" in line


def test_debug_flag_and_variable_show_the_traceback(scripts, capsys, monkeypatch):
    argv = ["--debug", "--config-file", "/nonexistent.yaml"]
    assert run_cli(scripts["train_net.py"].cli, argv, prog=PROG) == EXIT_INPUT_ERROR
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "InputError" in err
    monkeypatch.setenv(DEBUG_ENV, "1")
    assert run_cli(scripts["train_net.py"].cli, argv[1:], prog=PROG) == EXIT_INPUT_ERROR
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_wrong_architecture_checkpoint(files, datasets_dir, tmp_path):
    # A Mask2Former checkpoint given to Panoptic FPN: detected when loading (the model is
    # needed), still one line and no traceback.
    from detectron2.modeling import build_model

    from freqfusion_d2.engine import FreqFusionCheckpointer, setup_cfg

    FreqFusionCheckpointer(build_model(setup_cfg(M2F)), str(tmp_path)).save("m2f")
    weights = str(tmp_path / "m2f.pth")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", FPN, "--eval-only"]
        + ["MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(tmp_path / "out")],
        env=dict(os.environ, PYTHONPATH=ROOT, DETECTRON2_DATASETS=datasets_dir),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == EXIT_INPUT_ERROR, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"train_net.py: error: MODEL.WEIGHTS: checkpoint {weights} matches none of the model's"
    )
    assert last.endswith("expected a checkpoint of the PanopticFPN this config builds")


# ---- demo/demo.py ------------------------------------------------------------------------


def _demo(scripts, capsys, *argv):
    return _error(scripts["demo/demo.py"].main, list(argv), capsys)


def test_demo_arguments(scripts, capsys, files, tmp_path):
    image, out = str(files / "image.jpg"), str(tmp_path / "vis")
    base = ["--config-file", FPN, "--output", out]
    line = _demo(scripts, capsys, *base, "--input", str(tmp_path / "none*.jpg"))
    pattern = tmp_path / "none*.jpg"
    assert line == f"--input: {pattern} matches no file; expected image files, folders or globs"
    line = _demo(scripts, capsys, *base, "--input", image, "--confidence-threshold", "2")
    assert line == "--confidence-threshold: 2.0 is not a score; expected a value in [0, 1]"
    line = _demo(scripts, capsys, *base, "--input", image, "--scale", "0")
    assert line == "--scale: 0.0; expected a positive number"
    missing = str(tmp_path / "w.pth")
    line = _demo(scripts, capsys, *base, "--input", image, "--opts", "MODEL.WEIGHTS", missing)
    assert (
        line
        == f"MODEL.WEIGHTS: {missing} does not exist; expected a checkpoint file (.pth or .pkl)"
    )
    semantic_only = ["MODEL.MASK_FORMER.TEST.INSTANCE_ON", "False"]
    semantic_only += ["MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "False"]
    argv = ["--config-file", M2F, "--output", out, "--input", image, "--confidence-threshold"]
    line = _demo(scripts, capsys, *argv, "0.5", "--opts", *semantic_only)
    assert line.startswith("--confidence-threshold: has no effect on this model")
    folder = tmp_path / "only_bad"
    folder.mkdir()
    for name in ("truncated.jpg", "not_an_image.jpg"):
        (folder / name).write_bytes((files / name).read_bytes())
    line = _demo(scripts, capsys, *base, "--input", str(folder))
    assert line == "--input: none of the 2 inputs is a readable image"
    assert not os.path.exists(out)  # stopped before building the model or writing anything


def test_demo_skips_unreadable_images_in_a_folder(files, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("image.jpg", "truncated.jpg", "not_an_image.jpg"):
        (folder / name).write_bytes((files / name).read_bytes())
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "demo", "demo.py"), "--config-file", FPN]
        + ["--input", str(folder), "--output", str(tmp_path / "vis")],
        env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert f"Skipping --input: {folder / 'truncated.jpg'} is not a readable image" in log
    assert f"Skipping --input: {folder / 'not_an_image.jpg'} is not an image" in log
    assert os.listdir(tmp_path / "vis") == ["image.png"]


# ---- python -m freqfusion_d2.evaluation.panoptic -----------------------------------------


def test_pq_cli_bad_inputs(capsys, files, tmp_path):
    bad = str(files / "bad.json")
    line = _error(pq_main, ["--gt-json", bad, "--pred-json", bad], capsys)
    assert line == f"--gt-json: {bad} is not valid JSON (line 2, column 1: Expecting value)"
    gt = tmp_path / "gt.json"
    gt.write_text(
        json.dumps(
            {
                "annotations": [{"image_id": 1, "file_name": "1.png"}],
                "categories": [{"id": 1, "isthing": 1}],
            }
        )
    )
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"annotations": []}))
    line = _error(pq_main, ["--gt-json", str(gt), "--pred-json", str(pred)], capsys)
    assert line.startswith(
        f"--gt-folder (default: --gt-json without .json): {tmp_path / 'gt'} does not exist"
    )
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    argv = ["--gt-json", str(gt), "--pred-json", str(pred), "--num-workers", "0"]
    assert _error(pq_main, argv, capsys) == "--num-workers: 0; expected a positive integer"
    line = _error(pq_main, argv[:4], capsys)
    assert line == "--gt-json / --pred-json: pred_json_file: no prediction for the image with id 1"


# ---- tools/ ------------------------------------------------------------------------------


def test_convert_tool_bad_inputs(scripts, capsys, files, tmp_path):
    main = scripts["tools/convert_mmdet_freqfusion.py"].main
    out = str(tmp_path / "out.pth")
    line = _error(main, [str(tmp_path / "none.pth"), out], capsys)
    assert line.startswith(f"input: {tmp_path / 'none.pth'} does not exist; expected a checkpoint")
    line = _error(main, [str(files / "truncated.pth"), out], capsys)
    assert line.startswith(f"input: checkpoint {files / 'truncated.pth'} is truncated or corrupt")
    line = _error(main, [str(files / "good.pth"), out], capsys)
    assert line == (
        f"input: {files / 'good.pth'} has no neck.alignment.* tensors; expected an mmdet "
        "FreqFusionCARAFEFPN checkpoint (.pth)"
    )
    line = _error(main, [str(files / "good.pth"), str(tmp_path)], capsys)
    assert line == f"output: {tmp_path} is a directory; expected a file name (.pth)"
    assert not os.path.exists(out)


def test_summarize_metrics_bad_inputs(scripts, capsys, files, tmp_path):
    main = scripts["tools/summarize_metrics.py"].main
    missing = str(tmp_path / "eval_results.json")
    assert (
        _error(main, [missing], capsys) == f"files: {missing} does not exist; expected a JSON file"
    )
    bad = str(files / "bad.json")
    assert _error(main, [bad], capsys).startswith(f"files: {bad} is not valid JSON (line 2")
    line = _error(main, [bad, bad, "--names", "a"], capsys)
    assert line == "--names: 1 names for 2 files; expected one name per file"


# ---- datasets/ ---------------------------------------------------------------------------


def test_dataset_scripts_bad_inputs(scripts, capsys, files, tmp_path):
    synthetic = scripts["datasets/prepare_synthetic_coco.py"].main
    assert _error(synthetic, ["--num-train", "0"], capsys) == (
        "--num-train: 0; expected at least 1 image"
    )
    line = _error(synthetic, ["--root", str(files / "good.pth")], capsys)
    assert line == f"--root: {files / 'good.pth'} is a file; expected a folder for the dataset"

    line = _error(
        scripts["datasets/prepare_panoptic_fpn.py"].main, ["--coco", str(tmp_path / "coco")], capsys
    )
    assert line.startswith(f"--coco: {tmp_path / 'coco'} does not exist (download and unzip COCO")

    coco_semantic = scripts["datasets/prepare_coco_semantic_from_panoptic.py"].main
    line = _error(coco_semantic, ["--root", str(tmp_path), "--workers", "1"], capsys)
    assert line.startswith(f"--root: {tmp_path}/coco/panoptic_train2017 does not exist (download")

    ade = scripts["datasets/prepare_ade20k_sem_seg.py"].main
    line = _error(ade, ["--root", str(tmp_path)], capsys)
    assert line.startswith(f"--root: {tmp_path}/ADEChallengeData2016/annotations/training does not")
    assert "unzip ADEChallengeData2016.zip" in line
    labels = tmp_path / "ADEChallengeData2016" / "annotations" / "training"
    labels.mkdir(parents=True)
    (labels / "a.png").write_bytes((files / "truncated.jpg").read_bytes())
    line = _error(ade, ["--root", str(tmp_path)], capsys)
    assert line.startswith(f"--root: label map {labels / 'a.png'} cannot be converted (")


def test_analyze_and_visualize_tools_bad_inputs(capsys, files, tmp_path):
    analyze = _script("tools/analyze_model.py").main
    argv = ["--tasks", "parameter", "--config-file", FPN, "MODEL.FPN.OUT_CHANEL", "8"]
    line = _error(analyze, argv, capsys)
    assert line == (
        "opts: unknown config key MODEL.FPN.OUT_CHANEL (closest valid: MODEL.FPN.OUT_CHANNELS)"
    )
    argv = ["--tasks", "flop", "--config-file", FPN, "--input-size", "0", "64"]
    assert _error(analyze, argv, capsys) == "--input-size: 0 64; expected positive H W"
    visualize = _script("tools/visualize_sfm.py").main
    image = files / "not_an_image.jpg"
    line = _error(visualize, ["--image", str(image), "--out", str(tmp_path / "x.png")], capsys)
    assert line == f"--image: {image} is not an image; expected an image file (JPEG, PNG, ...)"
