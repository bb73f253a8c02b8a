"""Checkpointer with atomic writes and a clear report of FreqFusion weights a checkpoint lacks."""

import logging
import os
import tempfile
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch.nn.parallel import DistributedDataParallel

from ..layers import FreqFusion

logger = logging.getLogger(__name__)

__all__ = ["FreqFusionCheckpointer"]


def _atomic_write(path: str, write) -> None:
    """Calls ``write(file)`` on a temporary file next to ``path`` and renames it into place, so
    an interrupted write never leaves a truncated ``path``."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class FreqFusionCheckpointer(DetectionCheckpointer):
    """detectron2's :class:`DetectionCheckpointer` (loads ``.pth`` and model-zoo ``.pkl``) that

    * writes checkpoints and the ``last_checkpoint`` tag atomically (temporary file + rename),
      so a run killed while saving resumes from the previous complete checkpoint;
    * after loading, names the FreqFusion modules whose weights the checkpoint lacks (e.g. when
      a detectron2 model-zoo FPN model initialises a FreqFusion FPN).
    """

    def _is_local(self) -> bool:
        return "://" not in self.save_dir

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        if not self._is_local():
            super().save(name, **kwargs)
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        _atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._is_local():
            super().tag_last_checkpoint(last_filename_basename)
            return
        path = os.path.join(self.save_dir, "last_checkpoint")
        _atomic_write(path, lambda f: f.write(last_filename_basename.encode()))

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        missing = set(incompatible.missing_keys)
        model = self.model.module if isinstance(self.model, DistributedDataParallel) else self.model
        absent = [
            name
            for name, module in model.named_modules()
            if isinstance(module, FreqFusion) and any(k.startswith(name + ".") for k in missing)
        ]
        if absent:
            logger.warning(
                "The checkpoint has no (or incomplete) weights for %d FreqFusion module(s): %s. "
                "They keep their fresh initialisation; this is expected when a detectron2 FPN "
                "checkpoint (e.g. a model-zoo Panoptic FPN) initialises a FreqFusion model, and "
                "means the model must be fine-tuned before its results are meaningful.",
                len(absent),
                ", ".join(absent),
            )
        return incompatible
