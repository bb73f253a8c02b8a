"""SFM models: every *_sfm.yaml starts as its baseline (loaded from the baseline's weights), adds
fewer than 1.5M parameters to R-50, tracks its sampling frames, and trains on the synthetic data."""

import glob
import os

import pytest
import torch
from detectron2.data import build_detection_train_loader
from detectron2.modeling import build_backbone, build_model
from detectron2.utils.events import EventStorage

import freqfusion_d2.modeling  # noqa: F401  (registers the models)
from freqfusion_d2.data import build_train_mapper
from freqfusion_d2.data.datasets import SYNTHETIC_COCO_ROOT, register_synthetic_coco
from freqfusion_d2.data.synthetic import generate_synthetic_coco
from freqfusion_d2.engine import setup_cfg
from freqfusion_d2.layers.sampling_grid import identity_grid
from freqfusion_d2.modeling.backbone import SFMResNet, SFMSwinTransformer
from freqfusion_d2.solver import build_optimizer

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
SFM_CONFIGS = sorted(glob.glob(os.path.join(CONFIGS, "**", "*_sfm.yaml"), recursive=True))
NEW_MODULES = ("ars.", "demod.", "upsampler.", "mask_upsampler.")
CPU = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"]


def _baseline_of(path):
    return path[: -len("_sfm.yaml")] + ".yaml"


def _is_new(key):
    return any(f".{m}" in f".{key}" for m in NEW_MODULES)


def _image(h=64, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(3, h, w, generator=g) * 255).to(torch.uint8)


def _perturb_ars(model, scale=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ars." in f".{name}":
                p.add_(torch.randn(p.shape, generator=g) * scale)


def test_sfm_configs_exist_next_to_their_baselines():
    names = {os.path.relpath(p, CONFIGS) for p in SFM_CONFIGS}
    assert {
        "ADE20K-SemanticSegmentation/semantic_fpn_R50_512x512_80k_sfm.yaml",
        "Cityscapes-SemanticSegmentation/semantic_fpn_R50_512x1024_80k_sfm.yaml",
        "ADE20K-SemanticSegmentation/mask2former_R50_bs16_160k_sfm.yaml",
    } <= names
    for path in SFM_CONFIGS:
        assert os.path.exists(_baseline_of(path)), path


@pytest.mark.parametrize("path", SFM_CONFIGS, ids=lambda p: os.path.basename(p))
def test_sfm_model_with_baseline_weights_gives_the_baseline_outputs(path):
    torch.manual_seed(0)
    baseline = build_model(setup_cfg(_baseline_of(path), CPU)).eval()
    sfm = build_model(setup_cfg(path, CPU)).eval()
    result = sfm.load_state_dict(baseline.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all(_is_new(k) for k in result.missing_keys), [
        k for k in result.missing_keys if not _is_new(k)
    ]
    inputs = [{"image": _image()}, {"image": _image(56, 80, seed=1), "height": 40, "width": 50}]
    with torch.no_grad():
        expected = baseline(inputs)
        got = sfm(inputs)
    for e, g in zip(expected, got):
        e, g = e["sem_seg"], g["sem_seg"]
        assert e.shape == g.shape and e.abs().max() > 0
        assert (g - e).abs().max() <= 1e-4 * e.abs().max()
    # The modules are live: a changed ARS changes the output.
    _perturb_ars(sfm)
    with torch.no_grad():
        moved = sfm(inputs)[0]["sem_seg"]
    assert (moved - expected[0]["sem_seg"]).abs().max() > 1e-3 * expected[0]["sem_seg"].abs().max()


def test_sfm_adds_fewer_than_1_5m_parameters_to_r50():
    path = os.path.join(
        CONFIGS, "ADE20K-SemanticSegmentation/semantic_fpn_R50_512x512_80k_sfm.yaml"
    )
    baseline = build_model(setup_cfg(_baseline_of(path), CPU))
    sfm = build_model(setup_cfg(path, CPU))
    extra = sum(p.numel() for p in sfm.parameters()) - sum(p.numel() for p in baseline.parameters())
    new = sum(p.numel() for n, p in sfm.named_parameters() if _is_new(n))
    assert extra == new
    # avgpsp generators: C^2 + 4C + 1 for C = 256, 512, 1024, plus 4 for the final MSAU.
    assert 1_380_000 < extra < 1_500_000


def _tiny_resnet_cfg(stages=("res3", "res4", "res5")):
    opts = CPU + [
        "MODEL.BACKBONE.NAME",
        "build_resnet_sfm_backbone",
        "MODEL.RESNETS.DEPTH",
        18,
        "MODEL.RESNETS.RES2_OUT_CHANNELS",
        64,
        "MODEL.RESNETS.OUT_FEATURES",
        ["res2", "res3", "res4", "res5"],
        "MODEL.SFM.ARS_STAGES",
        list(stages),
    ]
    path = os.path.join(CONFIGS, "ADE20K-SemanticSegmentation/mask2former_R50_bs16_160k.yaml")
    return setup_cfg(path, opts)


def test_resnet_position_fields_compose_through_the_stages():
    backbone = build_backbone(_tiny_resnet_cfg(("res3", "res5"))).eval()
    assert isinstance(backbone, SFMResNet)
    assert set(backbone.ars) == {"res3", "res5"} and set(backbone.demod) == {"res3", "res4", "res5"}
    x = torch.randn(2, 3, 64, 96)
    outputs, fields = backbone.forward_with_positions(x)
    assert fields["res2"] is None
    for name, size in (("res3", (8, 12)), ("res4", (4, 6)), ("res5", (2, 3))):
        assert torch.equal(fields[name], identity_grid(*size, batch=2))
        assert outputs[name].shape[-2:] == size
    _perturb_ars(backbone, scale=0.5)
    # The res3 field is the ARS grid (in res2 pixels) read at every second pixel, in res3 pixels.
    res2 = backbone.stem(x)
    res2 = backbone.res2(res2)
    _, grid = backbone.ars["res3"](res2)
    _, fields = backbone.forward_with_positions(x)
    torch.testing.assert_close(fields["res3"], grid[..., ::2, ::2] / 2)
    assert (fields["res3"] - identity_grid(8, 12)).abs().max() > 0.01
    # res4 has no ARS of its own: its field is the res3 field subsampled.
    torch.testing.assert_close(fields["res4"], fields["res3"][..., ::2, ::2] / 2)


def test_swin_sfm_starts_as_the_swin_backbone():
    swin = [
        "MODEL.SWIN.EMBED_DIM",
        32,
        "MODEL.SWIN.DEPTHS",
        [2, 2, 2, 2],
        "MODEL.SWIN.NUM_HEADS",
        [1, 2, 4, 8],
        "MODEL.SWIN.WINDOW_SIZE",
        7,
        "MODEL.SWIN.DROP_PATH_RATE",
        0.0,
        "MODEL.SFM.ARS_STAGES",
        ["res3", "res4", "res5"],
    ]
    path = os.path.join(CONFIGS, "ADE20K-SemanticSegmentation/mask2former_R50_bs16_160k.yaml")
    torch.manual_seed(0)
    base = build_backbone(
        setup_cfg(path, CPU + ["MODEL.BACKBONE.NAME", "D2SwinTransformer"] + swin)
    )
    sfm = build_backbone(
        setup_cfg(path, CPU + ["MODEL.BACKBONE.NAME", "SFMSwinTransformer"] + swin)
    )
    assert isinstance(sfm, SFMSwinTransformer)
    result = sfm.load_state_dict(base.state_dict(), strict=False)
    assert result.unexpected_keys == [] and all(_is_new(k) for k in result.missing_keys)
    # Channels of the tokens entering each patch merging: 32, 64, 128.
    assert [sfm.ars[n].channels for n in ("res3", "res4", "res5")] == [32, 64, 128]
    x = torch.randn(1, 3, 64, 96)
    base.eval(), sfm.eval()
    with torch.no_grad():
        expected = base(x)
        got, fields = sfm.forward_with_positions(x)
    for name in expected:
        scale = expected[name].abs().max()
        assert (got[name] - expected[name]).abs().max() <= 1e-4 * scale, name
    assert torch.equal(fields["res5"], identity_grid(2, 3))
    _perturb_ars(sfm, scale=0.5)
    with torch.no_grad():
        _, fields = sfm.forward_with_positions(x)
    assert (fields["res4"] - identity_grid(4, 6)).abs().max() > 0.01


def test_bad_ars_stage_names_are_rejected():
    with pytest.raises(ValueError, match=r"ARS_STAGES \['res6'\] are not stages"):
        build_backbone(_tiny_resnet_cfg(("res3", "res6")))


@pytest.fixture(scope="module")
def synthetic():
    import tempfile

    root = tempfile.mkdtemp(prefix="sfm_synth_")
    generate_synthetic_coco(os.path.join(root, SYNTHETIC_COCO_ROOT), num_train=4, num_val=1, seed=5)
    register_synthetic_coco(os.path.join(root, SYNTHETIC_COCO_ROOT), prefix="sfm_synth")
    return "sfm_synth_train_panoptic_with_sem_seg"


def _tiny_overrides(path, dataset):
    opts = CPU + [
        "DATASETS.TRAIN",
        (dataset,),
        "DATASETS.TEST",
        (),
        "MODEL.RESNETS.DEPTH",
        18,
        "MODEL.RESNETS.RES2_OUT_CHANNELS",
        64,
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
        6,
        "SOLVER.IMS_PER_BATCH",
        2,
        "SOLVER.AMP.ENABLED",
        False,
        "INPUT.MIN_SIZE_TRAIN",
        (96,),
        "INPUT.MAX_SIZE_TRAIN",
        160,
        "INPUT.CROP.SIZE",
        (64, 64),
        "INPUT.SIZE_DIVISIBILITY",
        64,
        "DATALOADER.NUM_WORKERS",
        0,
    ]
    if "mask2former" in path:
        opts += [
            "MODEL.SEM_SEG_HEAD.CONVS_DIM",
            64,
            "MODEL.SEM_SEG_HEAD.MASK_DIM",
            64,
            "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS",
            1,
            "MODEL.MASK_FORMER.HIDDEN_DIM",
            64,
            "MODEL.MASK_FORMER.NHEADS",
            4,
            "MODEL.MASK_FORMER.DEC_LAYERS",
            2,
            "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES",
            10,
            "MODEL.MASK_FORMER.DIM_FEEDFORWARD",
            128,
            "MODEL.MASK_FORMER.TRAIN_NUM_POINTS",
            256,
        ]
    else:
        opts += ["MODEL.FPN.OUT_CHANNELS", 64, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32]
    return opts


@pytest.mark.parametrize("path", SFM_CONFIGS, ids=lambda p: os.path.basename(p))
def test_sfm_config_trains_a_few_iterations_on_synthetic_data(path, synthetic):
    cfg = setup_cfg(path, _tiny_overrides(path, synthetic))
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    loader = iter(build_detection_train_loader(cfg, mapper=build_train_mapper(cfg)))
    heads = {n: p for n, p in model.named_parameters() if n.endswith("saliency.2.weight")}
    assert len(heads) == 3
    heads.update({n: p for n, p in model.named_parameters() if n.endswith("gates")})
    start = {n: p.detach().clone() for n, p in heads.items()}
    assert len(start) >= 4
    with EventStorage():
        for _ in range(3):
            losses = model(next(loader))
            total = sum(losses.values())
            assert torch.isfinite(total)
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
    # The zero-initialised SFM layers receive gradients and move.
    moved = [n for n, p in heads.items() if not torch.equal(p.detach(), start[n])]
    assert any("saliency" in n for n in moved) and any("gates" in n for n in moved), moved
