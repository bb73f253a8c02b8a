"""Mask2Former components on hand-checkable inputs."""

import math

import torch
from detectron2.layers import ShapeSpec

from freqfusion_d2.modeling.backbone.swin import BasicLayer, window_partition, window_reverse
from freqfusion_d2.modeling.pixel_decoder import FreqAwareMSDeformAttnPixelDecoder2
from freqfusion_d2.modeling.transformer_decoder import (
    MultiScaleMaskedTransformerDecoder,
    PositionEmbeddingSine,
)


def test_position_embedding_matches_formula():
    n, h, w = 4, 2, 3
    pos = PositionEmbeddingSine(n, normalize=True)(torch.zeros(2, 7, h, w))
    assert pos.shape == (2, 2 * n, h, w) and pos.dtype == torch.float32
    i, j = 1, 2
    y = (i + 1) / (h + 1e-6) * 2 * math.pi
    x = (j + 1) / (w + 1e-6) * 2 * math.pi
    dim_t = [10000 ** (2 * (k // 2) / n) for k in range(n)]
    expected = [math.sin(y / dim_t[k]) if k % 2 == 0 else math.cos(y / dim_t[k]) for k in range(n)]
    expected += [math.sin(x / dim_t[k]) if k % 2 == 0 else math.cos(x / dim_t[k]) for k in range(n)]
    assert torch.allclose(pos[1, :, i, j], torch.tensor(expected), atol=1e-6)


def _decoder(**kw):
    args = dict(
        in_channels=32,
        mask_classification=True,
        num_classes=3,
        hidden_dim=32,
        num_queries=5,
        nheads=4,
        dim_feedforward=64,
        dec_layers=3,
        pre_norm=False,
        mask_dim=32,
        enforce_input_project=False,
    )
    args.update(kw)
    return MultiScaleMaskedTransformerDecoder(**args)


def test_decoder_outputs_and_fully_masked_queries_stay_finite():
    torch.manual_seed(0)
    decoder = _decoder().eval()
    feats = [torch.randn(2, 32, s, s) for s in (2, 4, 8)]
    # Strongly negative mask logits: every query's mask is empty, so every attention row
    # is fully blocked and must fall back to attending everywhere.
    mask_features = torch.ones(2, 32, 16, 16)
    with torch.no_grad():
        decoder.mask_embed.layers[2].weight.fill_(0)
        decoder.mask_embed.layers[2].bias.fill_(-10)
        out = decoder(feats, mask_features)
    assert out["pred_logits"].shape == (2, 5, 4)
    assert out["pred_masks"].shape == (2, 5, 16, 16)
    assert len(out["aux_outputs"]) == 3
    assert torch.isfinite(out["pred_logits"]).all()
    assert all(torch.isfinite(a["pred_logits"]).all() for a in out["aux_outputs"])


def test_decoder_attention_mask_is_batch_major():
    decoder = _decoder()
    mf = torch.zeros(2, 32, 4, 4)
    mf[1] = 1.0  # image 1 gets positive mask logits, image 0 zero logits (sigmoid 0.5)
    with torch.no_grad():
        decoder.mask_embed.layers[2].weight.fill_(0)
        decoder.mask_embed.layers[2].bias.fill_(1)
        output = torch.zeros(5, 2, 32)
        _, _, attn = decoder.forward_prediction_heads(output, mf - 0.1 * (mf == 0), (4, 4))
    assert attn.shape == (2 * 4, 5, 16)
    assert attn[:4].all() and not attn[4:].any()  # rows b * heads + head


def test_swin_window_roundtrip_and_shift_mask():
    x = torch.arange(2 * 8 * 8 * 3, dtype=torch.float32).view(2, 8, 8, 3)
    windows = window_partition(x, 4)
    assert windows.shape == (8, 4, 4, 3)
    assert torch.equal(windows[1], x[0, :4, 4:])  # row-major windows within an image
    assert torch.equal(window_reverse(windows, 4, 8, 8), x)
    layer = BasicLayer(8, 2, 2, 4, 4.0, True, None, 0.0, 0.0, [0.0, 0.0], False, False)
    mask = layer._shift_mask(6, 7, "cpu")  # padded to 8 x 8: 4 windows of 16 tokens
    assert mask.shape == (4, 16, 16)
    assert set(mask.unique().tolist()) == {0.0, -100.0}
    assert (mask[0] == 0).all()  # the top-left window holds a single region
    assert (mask[3] == -100).sum() > 0


def test_freqfusion_modules_run_where_the_checkpoint_expects():
    shapes = {
        "res2": ShapeSpec(channels=16, stride=4),
        "res3": ShapeSpec(channels=24, stride=8),
        "res4": ShapeSpec(channels=40, stride=16),
        "res5": ShapeSpec(channels=48, stride=32),
    }
    torch.manual_seed(0)
    decoder = FreqAwareMSDeformAttnPixelDecoder2(
        shapes,
        transformer_dropout=0.0,
        transformer_nheads=4,
        transformer_dim_feedforward=64,
        transformer_enc_layers=1,
        conv_dim=32,
        mask_dim=32,
        norm="GN",
        transformer_in_features=["res3", "res4", "res5"],
        common_stride=4,
    ).eval()
    seen = {}

    def record(index):
        def hook(module, args, kwargs, output):
            seen[index] = tuple(kwargs["hr_feat"].shape)

        return hook

    for i, module in enumerate(decoder.freqfusions):
        module.register_forward_hook(record(i), with_kwargs=True)
    feats = {
        k: torch.randn(1, v.channels, 64 // v.stride, 64 // v.stride) for k, v in shapes.items()
    }
    with torch.no_grad():
        mask_features, _, multi_scale = decoder.forward_features(feats)
    # 0: res5 -> res4 (1/16), 1: res4' -> res3 (1/8), both before the encoder; 2: FPN to res2.
    assert seen == {0: (1, 32, 4, 4), 1: (1, 32, 8, 8), 2: (1, 32, 16, 16)}
    assert mask_features.shape == (1, 32, 16, 16)
    assert [tuple(f.shape[-2:]) for f in multi_scale] == [(2, 2), (4, 4), (8, 8)]
