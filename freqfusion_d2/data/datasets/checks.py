"""Clear errors for dataset files that are missing on disk."""

import os

from detectron2.data import MetadataCatalog

__all__ = ["check_dataset_files", "dataset_root"]

# Metadata attributes that name files or folders a dataset needs.
_PATH_KEYS = ("image_root", "json_file", "panoptic_json", "panoptic_root", "sem_seg_root")


def dataset_root() -> str:
    """The folder datasets live in: ``$DETECTRON2_DATASETS``, default ``datasets``."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def _hint(name: str, key: str, path: str, meta) -> str:
    hint = meta.get("prepare_hint", None)
    if hint:
        return hint
    if key == "sem_seg_root" and "panoptic_stuff" in path:
        return "run `python datasets/prepare_panoptic_fpn.py` after downloading COCO panoptic"
    if key == "sem_seg_root" and "panoptic_semseg" in path:
        return "run `python datasets/prepare_panoptic_fpn.py --semseg` after downloading COCO"
    return "download and arrange the dataset as described in datasets/README.md"


def check_dataset_files(name: str) -> None:
    """Raises FileNotFoundError if a file or folder the registered dataset ``name`` needs is
    missing, naming the path, ``$DETECTRON2_DATASETS`` and how to prepare it.

    Datasets whose metadata names no paths are not checked.
    """
    meta = MetadataCatalog.get(name)
    for key in _PATH_KEYS:
        path = meta.get(key, None)
        if isinstance(path, str) and path and not os.path.exists(path):
            raise FileNotFoundError(
                f"Dataset '{name}' needs {key} = {path!r}, which does not exist "
                f"(DETECTRON2_DATASETS={dataset_root()!r}). To prepare it, "
                f"{_hint(name, key, path, meta)}."
            )
