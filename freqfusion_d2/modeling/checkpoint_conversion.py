"""Renaming of the official mmdet FreqFusion FPN checkpoints into this project's names.

The official mmdet model (``FreqFusionCARAFEFPN`` in
``mmdetection/mmdet/models/necks/fpn_carafe.py`` of github.com/Linwei-Chen/FreqFusion)
stores its four fusions as ``neck.alignment.{0,1,2,3}`` (P3->P2, P4->P3, P5->P4, P6->P5), its
1x1 laterals as ``neck.lateral_convs.{0..3}.conv``, the P6 lateral (3x3 stride-2 conv on C5) as
``neck.lateral_convs.4.conv`` and the output convs as ``neck.fpn_convs.{0..4}.conv``.

What carries over to :class:`~freqfusion_d2.modeling.FreqFusionFPN` (input res2-res5):

* ``alignment.{0,1,2}`` -> ``backbone.fpn_freqfusion{2,3,4}``: exactly (same module and keys;
  legacy ``scope``/``hr_scope`` names become ``direct_scale``/``hr_direct_scale``).
* ``alignment.3`` -> ``backbone.fpn_freqfusion5``, ``lateral_convs.4`` -> ``fpn_lateral6``,
  ``fpn_convs.4`` -> ``fpn_output6``: only with ``MODEL.FREQFUSION.FPN_EXTRA_P6`` (the mmdet
  layout); detectron2's default P6 is a parameter-free max-pool, so they are dropped otherwise.
* with ``neck=True``: ``lateral_convs.{0..3}`` -> ``fpn_lateral{2..5}`` and
  ``fpn_convs.{0..3}`` -> ``fpn_output{2..5}`` (same shapes: 1x1 / 3x3 convs with bias).
* with ``backbone=True``: the mmdet (pytorch-style) ResNet into detectron2's ResNet names; use
  it with ``MODEL.RESNETS.STRIDE_IN_1X1 False`` (mmdet puts the stride in the 3x3 conv) and
  ``MODEL.PIXEL_MEAN/STD`` in RGB order as the mmdet config normalises.
* The RPN, box, mask and panoptic heads are organised differently in mmdet and are not
  converted; a converted model needs its heads trained (or fine-tuned) in detectron2.
"""

import logging
import re
from typing import Dict, Tuple

logger = logging.getLogger(__name__)

__all__ = ["convert_mmdet_freqfusion_state_dict"]

_LEGACY = ((".hr_scope.", ".hr_direct_scale."), (".scope.", ".direct_scale."))


def _rename_legacy(key: str) -> str:
    for old, new in _LEGACY:
        key = key.replace(old, new)
    return key


def _resnet_key(key: str):
    """mmdet ResNet key (without ``backbone.``) -> detectron2 ResNet key, or None."""
    if key.endswith("num_batches_tracked"):
        return None
    m = re.fullmatch(r"(conv1|bn1)\.(\w+)", key)
    if m:
        return (
            f"stem.conv1.{m.group(2)}" if m.group(1) == "conv1" else f"stem.conv1.norm.{m.group(2)}"
        )
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", key)
    if not m:
        return None
    stage, block, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
    for mm, dd in (("downsample.0.", "shortcut."), ("downsample.1.", "shortcut.norm.")):
        if rest.startswith(mm):
            return f"res{stage}.{block}.{dd}{rest[len(mm):]}"
    m2 = re.fullmatch(r"(conv|bn)(\d)\.(\w+)", rest)
    if not m2:
        return None
    kind, idx, param = m2.groups()
    suffix = param if kind == "conv" else f"norm.{param}"
    return f"res{stage}.{block}.conv{idx}.{suffix}"


def convert_mmdet_freqfusion_state_dict(
    state_dict: Dict, *, extra_p6: bool = False, neck: bool = True, backbone: bool = False
) -> Tuple[Dict, Dict[str, int]]:
    """Converts an mmdet FreqFusion FPN state dict into detectron2 model keys.

    Args:
        state_dict: the mmdet checkpoint's ``state_dict`` (or the whole checkpoint: a dict with
            a ``state_dict`` entry is unwrapped).
        extra_p6: keep the P6 fusion, lateral and output conv (for ``FPN_EXTRA_P6``).
        neck: also convert the FPN lateral and output convs.
        backbone: also convert the ResNet backbone.

    Returns:
        (new state dict, counts of converted and skipped tensors per group).
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    out, counts = {}, {"freqfusion": 0, "neck": 0, "backbone": 0, "skipped": 0}
    for key, value in state_dict.items():
        new = None
        m = re.fullmatch(r"neck\.alignment\.(\d+)\.(.+)", key)
        if m:
            idx = int(m.group(1))
            if idx < 3 or (idx == 3 and extra_p6):
                new = f"backbone.fpn_freqfusion{idx + 2}." + _rename_legacy("." + m.group(2))[1:]
                counts["freqfusion"] += 1
        m = re.fullmatch(r"neck\.(lateral_convs|fpn_convs)\.(\d+)\.conv\.(weight|bias)", key)
        if m:
            idx = int(m.group(2))
            name = "fpn_lateral" if m.group(1) == "lateral_convs" else "fpn_output"
            if (neck and idx < 4) or (idx == 4 and extra_p6):
                new = f"backbone.{name}{idx + 2}.{m.group(3)}"
                counts["neck"] += 1
        if backbone and key.startswith("backbone."):
            d2 = _resnet_key(key[len("backbone.") :])
            if d2 is not None:
                new = "backbone.bottom_up." + d2
                counts["backbone"] += 1
        if new is None:
            counts["skipped"] += 1
            continue
        out[new] = value
    logger.info("Converted mmdet checkpoint: %s", counts)
    return out, counts
