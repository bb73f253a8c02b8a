"""MaskFormer (v1) components: the DETR transformer, ``StandardTransformerDecoder``,
``BasePixelDecoder`` and ``TransformerEncoderPixelDecoder``."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from m2f_testing import TINY_CONFIG, load_cfg, tiny_inputs
from torch import nn

from freqfusion_d2.modeling.pixel_decoder import BasePixelDecoder, TransformerEncoderPixelDecoder
from freqfusion_d2.modeling.transformer_decoder import StandardTransformerDecoder
from freqfusion_d2.modeling.transformer_decoder.transformer import (
    TransformerDecoderLayer,
    TransformerEncoderLayer,
)

SHAPES = {
    "res2": ShapeSpec(channels=8, stride=4),
    "res3": ShapeSpec(channels=16, stride=8),
    "res4": ShapeSpec(channels=24, stride=16),
    "res5": ShapeSpec(channels=32, stride=32),
}


def _features(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(2, s.channels, 64 // s.stride, 96 // s.stride, generator=g)
        for k, s in SHAPES.items()
    }


@pytest.mark.parametrize("pre_norm", [False, True])
def test_encoder_layer_equals_torch_layer_without_positions(pre_norm):
    torch.manual_seed(0)
    ours = TransformerEncoderLayer(16, 4, 32, dropout=0.0, normalize_before=pre_norm).eval()
    ref = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, norm_first=pre_norm).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)  # same parameter names
    x = torch.randn(7, 2, 16)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, -2:] = True
    torch.testing.assert_close(
        ours(x, src_key_padding_mask=pad), ref(x, src_key_padding_mask=pad), atol=1e-6, rtol=0
    )
    # Positions are added to queries and keys only.
    pos = torch.randn(7, 2, 16)
    assert not torch.allclose(ours(x, pos=pos), ours(x))


@pytest.mark.parametrize("pre_norm", [False, True])
def test_decoder_layer_equals_torch_layer_without_positions(pre_norm):
    torch.manual_seed(0)
    ours = TransformerDecoderLayer(16, 4, 32, dropout=0.0, normalize_before=pre_norm).eval()
    ref = nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0, norm_first=pre_norm).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    tgt, memory = torch.randn(5, 2, 16), torch.randn(9, 2, 16)
    torch.testing.assert_close(ours(tgt, memory), ref(tgt, memory), atol=1e-6, rtol=0)


def _decoder(deep_supervision=True, mask_classification=True, in_channels=32):
    return StandardTransformerDecoder(
        in_channels,
        mask_classification,
        num_classes=5,
        hidden_dim=16,
        num_queries=6,
        nheads=4,
        dropout=0.0,
        dim_feedforward=32,
        enc_layers=1,
        dec_layers=3,
        pre_norm=False,
        deep_supervision=deep_supervision,
        mask_dim=8,
        enforce_input_project=False,
    )


def test_standard_decoder_outputs_and_masks_are_dot_products():
    torch.manual_seed(0)
    dec = _decoder().eval()
    x, mask_features = torch.randn(2, 32, 3, 4), torch.randn(2, 8, 12, 16)
    seen = {}
    dec.mask_embed.register_forward_hook(lambda m, i, o: seen.update(embed=o))
    out = dec(x, mask_features)
    assert out["pred_logits"].shape == (2, 6, 6)
    assert out["pred_masks"].shape == (2, 6, 12, 16)
    assert len(out["aux_outputs"]) == 2  # dec_layers - 1
    expected = torch.einsum("bqc,bchw->bqhw", seen["embed"][-1], mask_features)
    torch.testing.assert_close(out["pred_masks"], expected)
    # Without deep supervision only the last layer is predicted, with the same result.
    single = _decoder(deep_supervision=False).eval()
    single.load_state_dict(dec.state_dict(), strict=True)
    out1 = single(x, mask_features)
    assert "aux_outputs" not in out1
    torch.testing.assert_close(out1["pred_masks"], out["pred_masks"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out1["pred_logits"], out["pred_logits"], atol=1e-5, rtol=0)


def test_standard_decoder_key_layout_and_options():
    sd = _decoder().state_dict()
    assert tuple(sd["input_proj.weight"].shape) == (16, 32, 1, 1)
    assert tuple(sd["query_embed.weight"].shape) == (6, 16)
    assert tuple(sd["class_embed.weight"].shape) == (6, 16)
    assert tuple(sd["mask_embed.layers.2.weight"].shape) == (8, 16)
    assert "transformer.encoder.layers.0.self_attn.in_proj_weight" in sd
    assert "transformer.decoder.layers.2.multihead_attn.out_proj.weight" in sd
    assert "transformer.decoder.norm.weight" in sd
    assert "transformer.encoder.norm.weight" not in sd  # post-norm: no final encoder norm
    assert not any(k.startswith("input_proj") for k in _decoder(in_channels=16).state_dict())
    no_cls = _decoder(mask_classification=False).eval()
    out = no_cls(torch.randn(1, 32, 2, 2), torch.randn(1, 8, 4, 4))
    assert "pred_logits" not in out and "pred_logits" not in out["aux_outputs"][0]
    with pytest.raises(ValueError, match="nheads"):
        StandardTransformerDecoder(
            16, True, num_classes=1, hidden_dim=10, num_queries=2, nheads=4, dropout=0.0,
            dim_feedforward=8, enc_layers=0, dec_layers=1, pre_norm=False,
            deep_supervision=True, mask_dim=8, enforce_input_project=False,
        )  # fmt: skip


def test_standard_decoder_padding_mask_is_used():
    torch.manual_seed(0)
    dec = _decoder().eval()
    x, mf = torch.randn(1, 32, 4, 4), torch.randn(1, 8, 8, 8)
    pad = torch.zeros(1, 16, 16, dtype=torch.bool)
    pad[:, :, 8:] = True
    a = dec(x, mf)["pred_logits"]
    b = dec(x, mf, pad)["pred_logits"]
    assert not torch.allclose(a, b)


def _oracle_fpn(dec, features, encoder=None):
    """Top-down FPN in functional ops with the module's parameters."""

    def conv(c, x):
        y = F.conv2d(x, c.weight, c.bias, padding=c.padding)
        if c.norm is not None:
            y = F.group_norm(y, 32, c.norm.weight, c.norm.bias, 1e-5)
        return F.relu(y) if c.activation is not None else y

    names = ["res5", "res4", "res3", "res2"]
    top = features["res5"] if encoder is None else encoder
    y = conv(getattr(dec, "layer_4"), top)
    outs = [y]
    for i, name in enumerate(names[1:]):
        idx = 3 - i
        lat = conv(getattr(dec, f"adapter_{idx}"), features[name])
        y = conv(getattr(dec, f"layer_{idx}"), lat + F.interpolate(y, size=lat.shape[-2:]))
        outs.append(y)
    return conv(dec.mask_features, y), outs[:3]


def test_base_pixel_decoder_matches_functional_fpn():
    torch.manual_seed(0)
    dec = BasePixelDecoder(SHAPES, conv_dim=32, mask_dim=16, norm="GN").eval()
    keys = set(dec.state_dict())
    assert {"adapter_1.weight", "adapter_3.norm.weight", "layer_4.weight"} <= keys
    assert "adapter_4.weight" not in keys and "mask_features.bias" in keys
    assert tuple(dec.state_dict()["layer_4.weight"].shape) == (32, 32, 3, 3)  # from res5 (32)
    feats = _features()
    mask_features, enc, multi = dec.forward_features(feats)
    assert enc is None
    exp_mask, exp_multi = _oracle_fpn(dec, feats)
    torch.testing.assert_close(mask_features, exp_mask, atol=1e-5, rtol=1e-5)
    assert [tuple(m.shape[-2:]) for m in multi] == [(2, 3), (4, 6), (8, 12)]
    for a, b in zip(multi, exp_multi):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert mask_features.shape == (2, 16, 16, 24)
    with pytest.raises(ValueError, match="input_shape"):
        BasePixelDecoder({}, conv_dim=32, mask_dim=16, norm="GN")


def test_transformer_encoder_pixel_decoder():
    torch.manual_seed(0)
    kwargs = dict(
        transformer_dropout=0.0,
        transformer_nheads=4,
        transformer_dim_feedforward=64,
        transformer_enc_layers=1,
        transformer_pre_norm=False,
        conv_dim=32,
        mask_dim=16,
        norm="GN",
    )
    dec = TransformerEncoderPixelDecoder(SHAPES, **kwargs).eval()
    sd = dec.state_dict()
    assert tuple(sd["input_proj.weight"].shape) == (32, 32, 1, 1)
    assert tuple(sd["layer_4.weight"].shape) == (32, 32, 3, 3)
    assert "transformer.encoder.layers.0.linear1.weight" in sd
    feats = _features(1)
    mask_features, enc, multi = dec.forward_features(feats)
    assert enc.shape == (2, 32, 2, 3)
    expected = dec.transformer(dec.input_proj(feats["res5"]), None, dec.pe_layer(feats["res5"]))
    torch.testing.assert_close(enc, expected)
    exp_mask, _ = _oracle_fpn(dec, feats, encoder=enc)
    torch.testing.assert_close(mask_features, exp_mask, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="transformer_nheads"):
        TransformerEncoderPixelDecoder(SHAPES, **{**kwargs, "transformer_nheads": 5})


V1_OPTS = [
    "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "TransformerEncoderPixelDecoder",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", 1,
    "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME", "StandardTransformerDecoder",
    "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE", "transformer_encoder",
    "MODEL.MASK_FORMER.DEC_LAYERS", 2,
]  # fmt: skip


def test_maskformer_v1_model_trains_and_infers():
    cfg = load_cfg(TINY_CONFIG, V1_OPTS)
    torch.manual_seed(0)
    model = build_model(cfg)
    inputs = tiny_inputs()
    masks = torch.zeros(2, 96, 128, dtype=torch.bool)
    masks[0, 10:50, 20:90] = True
    masks[1, 60:] = True
    from detectron2.structures import Instances

    inst = Instances((96, 128), gt_classes=torch.tensor([1, 3]), gt_masks=masks)
    empty = Instances(
        (80, 100),
        gt_classes=torch.zeros(0, dtype=torch.int64),
        gt_masks=torch.zeros(0, 80, 100, dtype=torch.bool),
    )
    batch = [dict(inputs[0], instances=inst), dict(inputs[1], instances=empty)]
    model.train()
    with EventStorage():
        losses = model(batch)
    assert {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.sem_seg_head.pixel_decoder.input_proj.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(inputs)
    assert out[0]["sem_seg"].shape[-2:] == (96, 128)


def test_position_encoding_with_an_all_valid_mask_equals_no_mask():
    from freqfusion_d2.modeling.transformer_decoder import PositionEmbeddingSine

    pe = PositionEmbeddingSine(8, normalize=True)
    x = torch.zeros(2, 3, 5, 7)
    none = pe(x)
    torch.testing.assert_close(pe(x, torch.zeros(2, 5, 7, dtype=torch.bool)), none)
    pad = torch.zeros(2, 5, 7, dtype=torch.bool)
    pad[1, :, 4:] = True  # image 1 is 4 wide: its x positions are normalised over 4 columns
    out = pe(x, pad)
    torch.testing.assert_close(out[0], none[0])
    torch.testing.assert_close(out[1, 8:, :, 3], none[0, 8:, :, 6])
    with pytest.raises(ValueError, match="mask"):
        pe(x, torch.zeros(2, 5, 6, dtype=torch.bool))
