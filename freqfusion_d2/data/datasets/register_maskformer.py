"""Dataset registrations that Mask2Former adds to detectron2's builtin ones.

Upstream: ``mask2former/data/datasets/register_coco_panoptic_annos_semseg.py`` and
``register_ade20k_panoptic.py`` (``stuff_colors``) of github.com/facebookresearch/Mask2Former.

Everything lives under ``$DETECTRON2_DATASETS`` (default ``datasets``) and is loaded lazily:
registering touches no file, and a missing file only raises when the dataset is loaded, with the
expected path and the script that prepares it.

* ``coco_2017_{train,val}_panoptic_with_sem_seg`` (new): detectron2's standard COCO panoptic
  dicts plus ``sem_seg_file_name`` under ``coco/panoptic_semseg_{train,val}2017`` (made by
  ``datasets/prepare_coco_semantic_from_panoptic.py``). ``stuff_dataset_id_to_contiguous_id``
  covers all 133 categories so that the semantic evaluator scores every class.
* ``coco_2017_{train,val}_panoptic`` (detectron2 builtin, kept): only the metadata is patched,
  as upstream does, so that ``thing_classes`` / ``thing_colors`` list the 80 thing classes.
* ``ade20k_sem_seg_{train,val}`` (detectron2 builtin): re-registered deliberately with the same
  loader and paths, only to turn a missing folder into an error naming
  ``datasets/prepare_ade20k_sem_seg.py``; ``stuff_colors`` is added to the metadata.

Upstream's ADE20K panoptic / instance / full, COCO-Stuff-10k and Mapillary registrations are not
provided; those names are left free.
"""

import logging
import os
from typing import Dict, List

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg
from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES, COCO_CATEGORIES
from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json

from .ade20k_categories import ADE20K_150_COLORS

__all__ = [
    "get_coco_panoptic_with_sem_seg_metadata",
    "load_coco_panoptic_with_sem_seg",
    "register_coco_panoptic_with_sem_seg",
    "register_ade20k_sem_seg",
    "register_all_maskformer",
]

logger = logging.getLogger(__name__)

_COCO_DOWNLOAD = "download and unzip COCO 2017 images and panoptic annotations there"
_COCO_SEM_SEG = "create it with 'python datasets/prepare_coco_semantic_from_panoptic.py'"
_ADE20K_DOWNLOAD = "download and unzip ADEChallengeData2016.zip (SceneParsing) there"
_ADE20K_LABELS = "create it with 'python datasets/prepare_ade20k_sem_seg.py'"

# split -> (image dir, panoptic PNG dir, panoptic json, semantic PNG dir, instances json), all
# relative to the dataset root.
_COCO_PANOPTIC_SPLITS = {
    split: (
        f"coco/{split}2017",
        f"coco/panoptic_{split}2017",
        f"coco/annotations/panoptic_{split}2017.json",
        f"coco/panoptic_semseg_{split}2017",
        f"coco/annotations/instances_{split}2017.json",
    )
    for split in ("train", "val")
}


def _require(path: str, what: str, hint: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{what} not found at {path!r}: {hint}. $DETECTRON2_DATASETS (default 'datasets') "
            "must name the folder that holds the datasets."
        )


def get_coco_panoptic_with_sem_seg_metadata() -> Dict[str, object]:
    """Metadata of the ``*_with_sem_seg`` COCO panoptic datasets.

    Contiguous id i is the position of the category in detectron2's ``COCO_CATEGORIES`` (things
    first, 0..79, then stuff, 80..132), the label the semantic PNGs use.
    """
    thing = [c for c in COCO_CATEGORIES if c["isthing"] == 1]
    return {
        "thing_classes": [c["name"] for c in thing],
        "thing_colors": [c["color"] for c in thing],
        "stuff_classes": [c["name"] for c in COCO_CATEGORIES],
        "stuff_colors": [c["color"] for c in COCO_CATEGORIES],
        "thing_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(COCO_CATEGORIES) if c["isthing"] == 1
        },
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(COCO_CATEGORIES)},
    }


def load_coco_panoptic_with_sem_seg(
    json_file: str, image_root: str, panoptic_root: str, sem_seg_root: str, metadata: dict
) -> List[dict]:
    """detectron2's COCO panoptic dicts with ``sem_seg_file_name`` added.

    ``segments_info`` category ids become contiguous ids; ``isthing`` is added.
    """
    _require(json_file, "COCO panoptic json", _COCO_DOWNLOAD)
    _require(image_root, "COCO image folder", _COCO_DOWNLOAD)
    _require(panoptic_root, "COCO panoptic PNG folder", _COCO_DOWNLOAD)
    _require(sem_seg_root, "COCO semantic PNG folder", _COCO_SEM_SEG)
    dicts = load_coco_panoptic_json(json_file, image_root, panoptic_root, metadata)
    for record in dicts:
        name = os.path.basename(record["pan_seg_file_name"])
        record["sem_seg_file_name"] = os.path.join(sem_seg_root, name)
    if dicts:
        _require(dicts[0]["sem_seg_file_name"], "COCO semantic PNG", _COCO_SEM_SEG)
    return dicts


def _patch_coco_panoptic_things(name: str, metadata: dict) -> None:
    """Restricts ``thing_classes`` / ``thing_colors`` of a registered dataset to the things."""
    if name not in DatasetCatalog.list():
        return
    meta = MetadataCatalog.get(name)
    for key in ("thing_classes", "thing_colors"):
        if hasattr(meta, key):
            delattr(meta, key)
    meta.set(thing_classes=metadata["thing_classes"], thing_colors=metadata["thing_colors"])


def register_coco_panoptic_with_sem_seg(
    name: str,
    metadata: dict,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: str,
    instances_json: str,
) -> None:
    """Registers ``<name>_with_sem_seg`` and patches the thing metadata of ``name``.

    Args:
        name: the panoptic dataset, e.g. ``coco_2017_train_panoptic``.
        metadata: from :func:`get_coco_panoptic_with_sem_seg_metadata` (or alike).
        image_root, panoptic_root, panoptic_json, sem_seg_root: data locations.
        instances_json: the instance annotations, for the COCO instance evaluator.
    """
    _patch_coco_panoptic_things(name, metadata)
    semantic_name = f"{name}_with_sem_seg"
    DatasetCatalog.register(
        semantic_name,
        lambda: load_coco_panoptic_with_sem_seg(
            panoptic_json, image_root, panoptic_root, sem_seg_root, metadata
        ),
    )
    MetadataCatalog.get(semantic_name).set(
        sem_seg_root=sem_seg_root,
        panoptic_root=panoptic_root,
        image_root=image_root,
        panoptic_json=panoptic_json,
        json_file=instances_json,
        evaluator_type="coco_panoptic_seg",
        ignore_label=255,
        label_divisor=1000,
        **metadata,
    )


def _load_ade20k_sem_seg(image_dir: str, gt_dir: str) -> List[dict]:
    _require(image_dir, "ADE20K image folder", _ADE20K_DOWNLOAD)
    _require(gt_dir, "ADE20K label folder in Detectron2 layout", _ADE20K_LABELS)
    return load_sem_seg(gt_dir, image_dir, gt_ext="png", image_ext="jpg")


def register_ade20k_sem_seg(root: str) -> None:
    """(Re-)registers ``ade20k_sem_seg_{train,val}`` under ``root/ADEChallengeData2016``.

    Same loader, paths and metadata as detectron2's builtin registration, plus ``stuff_colors``
    and a clear error when the data is missing.
    """
    base = os.path.join(root, "ADEChallengeData2016")
    for split, folder in (("train", "training"), ("val", "validation")):
        name = f"ade20k_sem_seg_{split}"
        image_dir = os.path.join(base, "images", folder)
        gt_dir = os.path.join(base, "annotations_detectron2", folder)
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        DatasetCatalog.register(name, lambda x=image_dir, y=gt_dir: _load_ade20k_sem_seg(x, y))
        meta = MetadataCatalog.get(name)
        if getattr(meta, "image_root", image_dir) != image_dir:
            # A registration for another root: start from clean metadata.
            MetadataCatalog.remove(name)
            meta = MetadataCatalog.get(name)
        meta.set(
            stuff_classes=ADE20K_SEM_SEG_CATEGORIES[:],
            stuff_colors=[color[:] for color in ADE20K_150_COLORS],
            image_root=image_dir,
            sem_seg_root=gt_dir,
            evaluator_type="sem_seg",
            ignore_label=255,
        )


def register_all_maskformer(root: str) -> None:
    """Registers every dataset of this module under ``root``; safe to call more than once."""
    metadata = get_coco_panoptic_with_sem_seg_metadata()
    registered = set(DatasetCatalog.list())
    for split, (
        images,
        panoptic,
        panoptic_json,
        semseg,
        instances,
    ) in _COCO_PANOPTIC_SPLITS.items():
        name = f"coco_2017_{split}_panoptic"
        if f"{name}_with_sem_seg" in registered:
            continue
        register_coco_panoptic_with_sem_seg(
            name,
            metadata,
            os.path.join(root, images),
            os.path.join(root, panoptic),
            os.path.join(root, panoptic_json),
            os.path.join(root, semseg),
            os.path.join(root, instances),
        )
    register_ade20k_sem_seg(root)


register_all_maskformer(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")))
