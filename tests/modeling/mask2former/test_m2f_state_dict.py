"""State-dict layout of Mask2Former equals upstream's (github.com/facebookresearch/Mask2Former).

The expected keys and shapes are generated from tables of upstream's modules (``MaskFormer``,
``MSDeformAttnPixelDecoder``, ``MultiScaleMaskedTransformerDecoder``, ``D2SwinTransformer`` and,
for FreqFusion, ``FreqAwareMSDeformAttnPixelDecoder2`` of github.com/Linwei-Chen/FreqFusion
``Mask2Former/mask2former/modeling/pixel_decoder/msdeformattn.py``); the totals are the counts of
upstream models built with the same configs. Large models are built on the meta device (no
memory, no init).
"""

import pickle
from collections import OrderedDict

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from m2f_testing import TINY_CONFIG, TINY_FF_CONFIG, load_cfg, tiny_swin_opts

ADE = "ADE20K-SemanticSegmentation/"
COCO = "COCO-PanopticSegmentation/"


def build_meta(relpath, opts=()):
    cfg = load_cfg(relpath, ["MODEL.DEVICE", "meta", *opts])
    return cfg, build_model(cfg)


# ------------------------------------------------------------------------------ expected tables


def pixel_decoder_keys(c, in_channels, heads, enc_layers, ffn=1024, mask_dim=None, points=4):
    """Upstream ``MSDeformAttnPixelDecoder`` with NORM = GN; ``in_channels`` = channels of
    res2..res5."""
    mask_dim = mask_dim or c
    c2, c3, c4, c5 = in_channels
    levels = 3
    keys = {}
    for i, cin in enumerate((c5, c4, c3)):
        keys[f"input_proj.{i}.0.weight"] = (c, cin, 1, 1)
        keys[f"input_proj.{i}.0.bias"] = (c,)
        keys[f"input_proj.{i}.1.weight"] = (c,)
        keys[f"input_proj.{i}.1.bias"] = (c,)
    keys["transformer.level_embed"] = (levels, c)
    for j in range(enc_layers):
        p = f"transformer.encoder.layers.{j}."
        keys[p + "self_attn.sampling_offsets.weight"] = (heads * levels * points * 2, c)
        keys[p + "self_attn.sampling_offsets.bias"] = (heads * levels * points * 2,)
        keys[p + "self_attn.attention_weights.weight"] = (heads * levels * points, c)
        keys[p + "self_attn.attention_weights.bias"] = (heads * levels * points,)
        for name in ("value_proj", "output_proj"):
            keys[p + f"self_attn.{name}.weight"] = (c, c)
            keys[p + f"self_attn.{name}.bias"] = (c,)
        for name in ("norm1", "norm2"):
            keys[p + f"{name}.weight"] = (c,)
            keys[p + f"{name}.bias"] = (c,)
        keys[p + "linear1.weight"] = (ffn, c)
        keys[p + "linear1.bias"] = (ffn,)
        keys[p + "linear2.weight"] = (c, ffn)
        keys[p + "linear2.bias"] = (c,)
    keys["mask_features.weight"] = (mask_dim, c, 1, 1)
    keys["mask_features.bias"] = (mask_dim,)
    keys["adapter_1.weight"] = (c, c2, 1, 1)
    keys["layer_1.weight"] = (c, c, 3, 3)
    for name in ("adapter_1", "layer_1"):
        keys[f"{name}.norm.weight"] = (c,)
        keys[f"{name}.norm.bias"] = (c,)
    return keys


def freqfusion_keys(c, modules=3, resample=True):
    """The fork's ``FreqAwareMSDeformAttnPixelDecoder2``: FreqFusion with C_c = 2C // 8,
    G_r = 4, no Hamming window, no GroupNorm."""
    cc = (2 * c) // 8
    g = 4
    one = {
        "hamming_lowpass": (1,),
        "hamming_highpass": (1,),
        "hr_channel_compressor.weight": (cc, c, 1, 1),
        "hr_channel_compressor.bias": (cc,),
        "lr_channel_compressor.weight": (cc, c, 1, 1),
        "lr_channel_compressor.bias": (cc,),
        "content_encoder.weight": (25, cc, 3, 3),
        "content_encoder.bias": (25,),
        "content_encoder2.weight": (9, cc, 3, 3),
        "content_encoder2.bias": (9,),
    }
    if resample:
        one.update(
            {
                "dysampler.init_pos": (1, 8 * g, 1, 1),
                "dysampler.offset.weight": (8 * g, cc + 8, 3, 3),
                "dysampler.offset.bias": (8 * g,),
                "dysampler.direct_scale.weight": (8 * g, cc + 8, 3, 3),
                "dysampler.direct_scale.bias": (8 * g,),
                "dysampler.hr_offset.weight": (2 * g, cc + 8, 3, 3),
                "dysampler.hr_offset.bias": (2 * g,),
                "dysampler.hr_direct_scale.weight": (2 * g, cc + 8, 3, 3),
                "dysampler.hr_direct_scale.bias": (2 * g,),
            }
        )
    return {f"freqfusions.{i}.{k}": v for i in range(modules) for k, v in one.items()}


def predictor_keys(d, q, k, ffn, layers, mask_dim=None, in_channels=None):
    """Upstream ``MultiScaleMaskedTransformerDecoder``; input projections only when
    in_channels is given."""
    mask_dim = mask_dim or d
    keys = {}
    for i in range(layers):
        for p, attn in (
            (f"transformer_self_attention_layers.{i}.", "self_attn"),
            (f"transformer_cross_attention_layers.{i}.", "multihead_attn"),
        ):
            keys[p + f"{attn}.in_proj_weight"] = (3 * d, d)
            keys[p + f"{attn}.in_proj_bias"] = (3 * d,)
            keys[p + f"{attn}.out_proj.weight"] = (d, d)
            keys[p + f"{attn}.out_proj.bias"] = (d,)
            keys[p + "norm.weight"] = (d,)
            keys[p + "norm.bias"] = (d,)
        p = f"transformer_ffn_layers.{i}."
        keys[p + "linear1.weight"] = (ffn, d)
        keys[p + "linear1.bias"] = (ffn,)
        keys[p + "linear2.weight"] = (d, ffn)
        keys[p + "linear2.bias"] = (d,)
        keys[p + "norm.weight"] = (d,)
        keys[p + "norm.bias"] = (d,)
    keys["decoder_norm.weight"] = (d,)
    keys["decoder_norm.bias"] = (d,)
    keys["query_feat.weight"] = (q, d)
    keys["query_embed.weight"] = (q, d)
    keys["level_embed.weight"] = (3, d)
    if in_channels is not None:
        for i in range(3):
            keys[f"input_proj.{i}.weight"] = (d, in_channels, 1, 1)
            keys[f"input_proj.{i}.bias"] = (d,)
    keys["class_embed.weight"] = (k + 1, d)
    keys["class_embed.bias"] = (k + 1,)
    for i, out in enumerate((d, d, mask_dim)):
        keys[f"mask_embed.layers.{i}.weight"] = (out, d)
        keys[f"mask_embed.layers.{i}.bias"] = (out,)
    return keys


def swin_keys(embed, depths, heads, window, patch=4, mlp_ratio=4.0):
    """Upstream ``D2SwinTransformer`` with PATCH_NORM, QKV_BIAS and no APE."""
    keys = {
        "patch_embed.proj.weight": (embed, 3, patch, patch),
        "patch_embed.proj.bias": (embed,),
        "patch_embed.norm.weight": (embed,),
        "patch_embed.norm.bias": (embed,),
    }
    for s, (depth, nh) in enumerate(zip(depths, heads)):
        e = embed * 2**s
        hidden = int(e * mlp_ratio)
        for b in range(depth):
            p = f"layers.{s}.blocks.{b}."
            keys.update(
                {
                    p + "norm1.weight": (e,),
                    p + "norm1.bias": (e,),
                    p + "attn.relative_position_bias_table": ((2 * window - 1) ** 2, nh),
                    p + "attn.relative_position_index": (window**2, window**2),
                    p + "attn.qkv.weight": (3 * e, e),
                    p + "attn.qkv.bias": (3 * e,),
                    p + "attn.proj.weight": (e, e),
                    p + "attn.proj.bias": (e,),
                    p + "norm2.weight": (e,),
                    p + "norm2.bias": (e,),
                    p + "mlp.fc1.weight": (hidden, e),
                    p + "mlp.fc1.bias": (hidden,),
                    p + "mlp.fc2.weight": (e, hidden),
                    p + "mlp.fc2.bias": (e,),
                }
            )
        if s < len(depths) - 1:
            keys[f"layers.{s}.downsample.reduction.weight"] = (2 * e, 4 * e)
            keys[f"layers.{s}.downsample.norm.weight"] = (4 * e,)
            keys[f"layers.{s}.downsample.norm.bias"] = (4 * e,)
        keys[f"norm{s}.weight"] = (e,)
        keys[f"norm{s}.bias"] = (e,)
    return keys


def shapes_under(sd, prefix):
    return {k[len(prefix) :]: tuple(v.shape) for k, v in sd.items() if k.startswith(prefix)}


def resnet_block_keys(depth):
    blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    # stem conv (1 + 4 FrozenBN), 3 convs per block, one shortcut per stage, 5 keys each.
    return 5 + sum(5 * 3 * n for n in blocks) + 4 * 5


R50_CH = (256, 512, 1024, 2048)
SWIN_B = dict(embed=128, depths=(2, 2, 18, 2), heads=(4, 8, 16, 32), window=12)
SWIN_L = dict(embed=192, depths=(2, 2, 18, 2), heads=(6, 12, 24, 48), window=12)

# (config, extra opts, classes, backbone, FreqFusion, total keys, parameters of upstream's model).
CASES = [
    (COCO + "mask2former_R50_bs16_50ep.yaml", (), 133, "R50", False, 558, 43_983_878),
    (ADE + "mask2former_R50_bs16_160k.yaml", (), 150, "R50", False, 558, 43_988_247),
    (
        ADE + "mask2former_swin_base_IN21k_384_bs16_160k_res640.yaml",
        (),
        150,
        SWIN_B,
        False,
        650,
        106_922_191,
    ),
    (COCO + "mask2former_FreqFusion_R50_bs16_50ep.yaml", (), 133, "R50", True, 615, 44_297_180),
    (
        ADE + "mask2former_FreqFusion_swin_base_IN21k_384_bs16_160k_res640.yaml",
        (),
        150,
        SWIN_B,
        True,
        707,
        107_235_493,
    ),
    (
        ADE + "mask2former_swin_large_IN21k_384_bs16_160k_res640.yaml",
        (),
        150,
        SWIN_L,
        False,
        None,
        None,
    ),
    (
        COCO + "mask2former_FreqFusion_R50_bs16_50ep.yaml",
        ("MODEL.RESNETS.DEPTH", 101),
        133,
        "R101",
        True,
        None,
        None,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0].split("/")[-1] + "".join(map(str, c[1])))
def test_reference_state_dict(case):
    relpath, opts, num_classes, backbone, freqfusion, total_keys, total_params = case
    _, model = build_meta(relpath, opts)
    sd = model.state_dict()

    expected_head = pixel_decoder_keys(
        256,
        R50_CH if isinstance(backbone, str) else [backbone["embed"] * 2**i for i in range(4)],
        heads=8,
        enc_layers=6,
    )
    if freqfusion:
        expected_head.update(freqfusion_keys(256))
        # About 0.31M parameters: 3 modules of 104,434.
        ff = model.sem_seg_head.pixel_decoder.freqfusions
        assert [sum(p.numel() for p in m.parameters()) for m in ff] == [104_434] * 3
    assert shapes_under(sd, "sem_seg_head.pixel_decoder.") == expected_head
    assert shapes_under(sd, "sem_seg_head.predictor.") == predictor_keys(
        256, 100, num_classes, 2048, 9
    )
    if isinstance(backbone, str):
        depth = int(backbone[1:])
        bb = shapes_under(sd, "backbone.")
        assert len(bb) == resnet_block_keys(depth)
        assert bb["stem.conv1.weight"] == (64, 3, 7, 7)
        assert bb["res5.2.conv3.norm.running_var"] == (2048,)
    else:
        assert shapes_under(sd, "backbone.") == swin_keys(**backbone)
        index = sd["backbone.layers.0.blocks.0.attn.relative_position_index"]
        assert index.dtype == torch.int64
    assert tuple(sd["criterion.empty_weight"].shape) == (num_classes + 1,)
    assert not any(k.startswith("pixel_") for k in sd)  # pixel_mean/std are not persistent
    # Upstream's counts: head keys 117 (+57 FreqFusion) and 175 predictor keys.
    assert len(shapes_under(sd, "sem_seg_head.pixel_decoder.")) == (174 if freqfusion else 117)
    assert len(shapes_under(sd, "sem_seg_head.predictor.")) == 175
    if total_keys is not None:
        assert len(sd) == total_keys
        assert sum(p.numel() for p in model.parameters()) == total_params
    # Version metadata as upstream writes it.
    assert sd._metadata["sem_seg_head"]["version"] == 2
    assert sd._metadata["sem_seg_head.predictor"]["version"] == 2


def test_enforce_input_proj_adds_decoder_projections():
    _, model = build_meta(TINY_CONFIG, ["MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ", True])
    pred = shapes_under(model.state_dict(), "sem_seg_head.predictor.")
    assert pred == predictor_keys(64, 10, 6, 128, 3, in_channels=64)


def test_tiny_configs_key_counts():
    # As upstream builds them: 221 keys (R18), 278 with FreqFusion, 254 for the tiny Swin.
    for relpath, opts, keys in (
        (TINY_CONFIG, [], 221),
        (TINY_FF_CONFIG, [], 278),
        (TINY_CONFIG, tiny_swin_opts(), 254),
    ):
        _, model = build_meta(relpath, opts)
        assert len(model.state_dict()) == keys


def test_v1_decoder_builds_with_two_modules_without_offset_generator():
    _, model = build_meta(
        TINY_CONFIG,
        ["MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "FreqAwareMSDeformAttnPixelDecoder"],
    )
    pd = shapes_under(model.state_dict(), "sem_seg_head.pixel_decoder.")
    ff = {k: v for k, v in pd.items() if k.startswith("freqfusions.")}
    assert ff == freqfusion_keys(64, modules=2, resample=False)


# -------------------------------------------------------------------------------------- loading


@pytest.fixture(scope="module")
def tiny_pair():
    """Two tiny FreqFusion models with different random weights."""
    cfg = load_cfg(TINY_FF_CONFIG)
    torch.manual_seed(0)
    src = build_model(cfg)
    torch.manual_seed(1)
    dst = build_model(cfg)
    return src, dst


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_strict_load_with_and_without_metadata(tiny_pair):
    src, dst = tiny_pair
    sd = src.state_dict()
    assert hasattr(sd, "_metadata")
    dst.load_state_dict(sd, strict=True)
    assert_same_weights(src, dst)
    # A plain dict has no version metadata; upstream's rename would corrupt it.
    plain = {k: v.clone() + 1 for k, v in sd.items() if v.is_floating_point()}
    plain.update({k: v for k, v in sd.items() if not v.is_floating_point()})
    dst.load_state_dict(plain, strict=True)
    assert torch.equal(
        dst.sem_seg_head.pixel_decoder.mask_features.weight,
        plain["sem_seg_head.pixel_decoder.mask_features.weight"],
    )


def test_legacy_layouts_are_renamed(tiny_pair):
    src, dst = tiny_pair
    sd = src.state_dict()
    old = OrderedDict()
    for k, v in sd.items():
        k = k.replace("sem_seg_head.pixel_decoder.", "sem_seg_head.")
        k = k.replace("predictor.query_feat.", "predictor.static_query.")
        old[k] = v
    assert (
        "sem_seg_head.adapter_1.weight" in old
        and "sem_seg_head.predictor.static_query.weight" in old
    )
    dst.load_state_dict(old, strict=True)  # no metadata: treated as version 1
    assert_same_weights(src, dst)


def test_missing_criterion_weight_is_filled(tiny_pair):
    src, dst = tiny_pair
    sd = {k: v for k, v in src.state_dict().items() if k != "criterion.empty_weight"}
    dst.load_state_dict(sd, strict=True)
    assert torch.equal(dst.criterion.empty_weight, src.criterion.empty_weight)


def test_detection_checkpointer_loads_pkl_strictly(tiny_pair, tmp_path):
    src, dst = tiny_pair
    path = str(tmp_path / "model.pkl")
    with open(path, "wb") as f:
        pickle.dump(
            {"model": {k: v.numpy() for k, v in src.state_dict().items()}, "__author__": "test"}, f
        )
    checkpointer = DetectionCheckpointer(dst)
    ckpt = checkpointer._load_file(path)
    checkpointer._convert_ndarray_to_tensor(ckpt["model"])
    dst.load_state_dict(ckpt["model"], strict=True)
    assert_same_weights(src, dst)
    torch.manual_seed(2)
    for p in dst.parameters():
        torch.nn.init.normal_(p)
    DetectionCheckpointer(dst).load(path)
    assert_same_weights(src, dst)
