"""A small synthetic COCO-format dataset (things and stuff), registered like COCO.

The files are made by ``datasets/prepare_synthetic_coco.py`` (see
:func:`freqfusion_d2.data.synthetic.generate_synthetic_coco`) under
``$DETECTRON2_DATASETS/synthetic_coco``, with COCO's layout::

    synthetic_coco/
      {train,val}2017/*.jpg
      annotations/instances_{train,val}2017.json
      annotations/panoptic_{train,val}2017.json
      panoptic_{train,val}2017/*.png                  # panoptic PNGs
      panoptic_stuff_{train,val}2017/*.png            # things -> 0, stuff -> 1..S, void 255
      panoptic_semseg_{train,val}2017/*.png           # all classes -> 0..K-1, void 255

Registered names (``<split>`` is ``train`` or ``val``):

* ``synthetic_coco_2017_<split>``: instances (Mask R-CNN, Faster R-CNN);
* ``synthetic_coco_2017_<split>_panoptic_separated`` (+ ``_stuffonly``): Panoptic FPN;
* ``synthetic_coco_2017_<split>_panoptic_with_sem_seg``: panoptic with all-class semantic
  labels (Mask2Former).
"""

import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import load_coco_json, load_sem_seg
from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json, merge_to_panoptic

from .checks import check_dataset_files

__all__ = [
    "SYNTHETIC_COCO_CATEGORIES",
    "SYNTHETIC_COCO_ROOT",
    "synthetic_coco_paths",
    "get_synthetic_coco_metadata",
    "register_synthetic_coco",
]

# The one list of classes: COCO-like non-contiguous ids; "color" is both the visualisation
# color and the base color the generator paints the class with. Things come first, as in COCO,
# so that in the Mask2Former metadata thing_classes[i] names contiguous id i.
SYNTHETIC_COCO_CATEGORIES = [
    {"id": 1, "name": "disc", "isthing": 1, "color": [220, 20, 60]},
    {"id": 2, "name": "box", "isthing": 1, "color": [30, 60, 200]},
    {"id": 4, "name": "triangle", "isthing": 1, "color": [250, 200, 30]},
    {"id": 7, "name": "sky", "isthing": 0, "color": [135, 190, 235]},
    {"id": 9, "name": "grass", "isthing": 0, "color": [60, 140, 50]},
    {"id": 10, "name": "sand", "isthing": 0, "color": [200, 170, 120]},
]

SYNTHETIC_COCO_ROOT = "synthetic_coco"
PREPARE_HINT = "run `python datasets/prepare_synthetic_coco.py` (or `make data`)"


def synthetic_coco_paths(root: str, split: str) -> dict:
    """Paths of one split of the synthetic dataset under ``root`` (the dataset folder)."""
    return {
        "image_root": os.path.join(root, f"{split}2017"),
        "json_file": os.path.join(root, "annotations", f"instances_{split}2017.json"),
        "panoptic_json": os.path.join(root, "annotations", f"panoptic_{split}2017.json"),
        "panoptic_root": os.path.join(root, f"panoptic_{split}2017"),
        "sem_seg_root": os.path.join(root, f"panoptic_stuff_{split}2017"),
        "semseg_all_root": os.path.join(root, f"panoptic_semseg_{split}2017"),
    }


def get_synthetic_coco_metadata(kind: str) -> dict:
    """Class metadata in detectron2's conventions.

    Args:
        kind: "instances", "panoptic_separated" (Panoptic FPN: stuff class 0 is "things") or
            "panoptic_with_sem_seg" (Mask2Former's convention, as for
            ``coco_2017_*_panoptic_with_sem_seg``: contiguous id i is the position of the class
            in :data:`SYNTHETIC_COCO_CATEGORIES`, things first; ``thing_classes`` lists the
            things only, ``stuff_classes`` and ``stuff_dataset_id_to_contiguous_id`` cover every
            class, so that the semantic evaluator scores all of them, and
            ``thing_dataset_id_to_contiguous_id`` maps the thing ids into that same space).

    Raises:
        ValueError: for an unknown ``kind``.
    """
    things = [c for c in SYNTHETIC_COCO_CATEGORIES if c["isthing"]]
    stuff = [c for c in SYNTHETIC_COCO_CATEGORIES if not c["isthing"]]
    meta = {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [c["color"] for c in things],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(things)},
    }
    if kind == "instances":
        return meta
    if kind == "panoptic_separated":
        meta["stuff_classes"] = ["things"] + [c["name"] for c in stuff]
        meta["stuff_colors"] = [[82, 18, 128]] + [c["color"] for c in stuff]
        meta["stuff_dataset_id_to_contiguous_id"] = {0: 0}
        meta["stuff_dataset_id_to_contiguous_id"].update(
            {c["id"]: i + 1 for i, c in enumerate(stuff)}
        )
        return meta
    if kind == "panoptic_with_sem_seg":
        cats = SYNTHETIC_COCO_CATEGORIES
        meta["stuff_classes"] = [c["name"] for c in cats]
        meta["stuff_colors"] = [c["color"] for c in cats]
        meta["thing_dataset_id_to_contiguous_id"] = {
            c["id"]: i for i, c in enumerate(cats) if c["isthing"]
        }
        meta["stuff_dataset_id_to_contiguous_id"] = {c["id"]: i for i, c in enumerate(cats)}
        return meta
    raise ValueError(
        "kind must be 'instances', 'panoptic_separated' or 'panoptic_with_sem_seg', "
        f"got {kind!r}"
    )


def _load_instances(name, paths):
    check_dataset_files(name)
    return load_coco_json(paths["json_file"], paths["image_root"], name)


def _load_panoptic_separated(name, paths):
    check_dataset_files(name)
    return merge_to_panoptic(
        load_coco_json(paths["json_file"], paths["image_root"], name),
        load_sem_seg(paths["sem_seg_root"], paths["image_root"]),
    )


def _load_stuffonly(name, paths):
    check_dataset_files(name)
    return load_sem_seg(paths["sem_seg_root"], paths["image_root"])


def _load_panoptic_with_sem_seg(name, paths):
    check_dataset_files(name)
    dicts = load_coco_panoptic_json(
        paths["panoptic_json"],
        paths["image_root"],
        paths["panoptic_root"],
        get_synthetic_coco_metadata("panoptic_with_sem_seg"),
    )
    for d in dicts:
        stem = os.path.splitext(os.path.basename(d["pan_seg_file_name"]))[0]
        d["sem_seg_file_name"] = os.path.join(paths["semseg_all_root"], stem + ".png")
    return dicts


def register_synthetic_coco(root: str, prefix: str = "synthetic_coco_2017") -> None:
    """Registers the train and val splits found (or to be generated) in ``root``.

    Args:
        root: the dataset folder, e.g. ``$DETECTRON2_DATASETS/synthetic_coco``.
        prefix: start of the registered names.
    """
    for split in ("train", "val"):
        paths = synthetic_coco_paths(root, split)
        common = {"image_root": paths["image_root"], "prepare_hint": PREPARE_HINT}

        name = f"{prefix}_{split}"
        DatasetCatalog.register(name, lambda n=name, p=paths: _load_instances(n, p))
        MetadataCatalog.get(name).set(
            json_file=paths["json_file"],
            evaluator_type="coco",
            **common,
            **get_synthetic_coco_metadata("instances"),
        )

        name = f"{prefix}_{split}_panoptic_separated"
        DatasetCatalog.register(name, lambda n=name, p=paths: _load_panoptic_separated(n, p))
        MetadataCatalog.get(name).set(
            panoptic_root=paths["panoptic_root"],
            panoptic_json=paths["panoptic_json"],
            sem_seg_root=paths["sem_seg_root"],
            json_file=paths["json_file"],
            evaluator_type="coco_panoptic_seg",
            ignore_label=255,
            **common,
            **get_synthetic_coco_metadata("panoptic_separated"),
        )

        name = f"{prefix}_{split}_panoptic_stuffonly"
        DatasetCatalog.register(name, lambda n=name, p=paths: _load_stuffonly(n, p))
        MetadataCatalog.get(name).set(
            sem_seg_root=paths["sem_seg_root"],
            evaluator_type="sem_seg",
            ignore_label=255,
            **common,
            **get_synthetic_coco_metadata("panoptic_separated"),
        )

        name = f"{prefix}_{split}_panoptic_with_sem_seg"
        DatasetCatalog.register(name, lambda n=name, p=paths: _load_panoptic_with_sem_seg(n, p))
        MetadataCatalog.get(name).set(
            panoptic_root=paths["panoptic_root"],
            panoptic_json=paths["panoptic_json"],
            sem_seg_root=paths["semseg_all_root"],
            json_file=paths["json_file"],
            evaluator_type="coco_panoptic_seg",
            ignore_label=255,
            label_divisor=1000,
            **common,
            **get_synthetic_coco_metadata("panoptic_with_sem_seg"),
        )
