"""Checkpointer with atomic writes, verified loads, resuming past a damaged checkpoint and a
clear report of FreqFusion weights a checkpoint lacks."""

import glob
import logging
import os
import pickle
import re
import struct
import tempfile
import zipfile
import zlib
from typing import Any, List, Optional, Tuple

import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch.nn.parallel import DistributedDataParallel

from ..layers import FreqFusion
from ..utils.cli import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "FreqFusionCheckpointer",
    "atomic_save",
    "find_resume_checkpoints",
    "verify_checkpoint_file",
]

# What reading a damaged or foreign file raises (torch.load, pickle, zipfile).
_READ_ERRORS = (
    RuntimeError,
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    ImportError,
    IndexError,
    AssertionError,
    OSError,
    zipfile.BadZipFile,
)

# What zipfile raises for a damaged archive.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    KeyError,
    struct.error,
    zlib.error,
)

# Files written by detectron2's PeriodicCheckpointer (model_0000099.pth, model_final.pth).
_PERIODIC_NAME = re.compile(r"^model_(\d+|final)\.pth$")


class CheckpointError(InputError):
    """A checkpoint that is missing, truncated, corrupt or of another model."""

    def __init__(
        self,
        path: str,
        problem: str,
        argument: str = "MODEL.WEIGHTS",
        expected: Optional[str] = None,
    ):
        self.path = path
        super().__init__(argument, f"checkpoint {path} {problem}", expected)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def verify_checkpoint_file(path: str, argument: str = "MODEL.WEIGHTS", deep: bool = False) -> None:
    """Checks that ``path`` is a complete checkpoint file.

    A ``torch.save`` file is a zip archive: it must have its central directory (a truncated file
    has none), a ``data.pkl`` record, and every record must match its CRC-32 (``torch.load``
    itself does not check them, so a flipped byte would load silently); this reads the file but
    unpickles nothing. Other files (the pickled ``.pkl`` of the detectron2 model zoo) are
    unpickled when ``deep``, and otherwise left to the loader.

    Args:
        path: the file.
        argument: the option or key that named it, for the message.
        deep: also unpickle a file that is not a zip archive.

    Raises:
        CheckpointError: naming the file and the problem.
    """
    if not os.path.exists(path):
        raise CheckpointError(path, "does not exist", argument)
    if not os.path.isfile(path):
        raise CheckpointError(path, "is not a file", argument)
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(path, "is empty (0 bytes)", argument)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        if deep:
            try:
                with open(path, "rb") as f:
                    pickle.load(f, encoding="latin1")
            except _READ_ERRORS as e:
                raise CheckpointError(
                    path,
                    "is corrupt or not a checkpoint: neither a torch.save archive nor a "
                    f"complete pickle ({_first_line(e)})",
                    argument,
                ) from e
        return
    try:
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS as e:
        raise CheckpointError(
            path, f"is truncated or corrupt ({size} bytes, no readable zip directory)", argument
        ) from e
    with archive:
        names = archive.namelist()
        try:
            bad = archive.testzip()
        except _ZIP_ERRORS as e:  # a damaged record header
            raise CheckpointError(path, f"is corrupt ({_first_line(e)})", argument) from e
    if bad is not None:
        raise CheckpointError(path, f"is corrupt (record {bad} fails its CRC check)", argument)
    if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        raise CheckpointError(path, "is a zip file but not a PyTorch checkpoint", argument)


def find_resume_checkpoints(save_dir: str) -> Tuple[List[str], List[str]]:
    """The checkpoints of ``save_dir`` that ``--resume`` may use, newest first.

    The file named by ``last_checkpoint`` comes first, then the other periodic checkpoints
    (``model_<iter>.pth``, ``model_final.pth``) from the most recently written. Files that fail
    :func:`verify_checkpoint_file` are left out.

    Returns:
        ``(complete, skipped)``: paths of the complete checkpoints, and one line per file left
        out saying why.
    """
    tagged = None
    tag = os.path.join(save_dir, "last_checkpoint")
    if os.path.isfile(tag):
        with open(tag) as f:
            name = f.read().strip()
        tagged = os.path.join(save_dir, name) if name else None
    names = os.listdir(save_dir) if os.path.isdir(save_dir) else []
    others = [os.path.join(save_dir, n) for n in names if _PERIODIC_NAME.match(n)]
    others = [p for p in others if p != tagged]
    others.sort(key=lambda p: (os.path.getmtime(p), os.path.basename(p)), reverse=True)
    complete, skipped = [], []
    for path in ([tagged] if tagged else []) + others:
        try:
            verify_checkpoint_file(path, argument="--resume")
        except CheckpointError as e:
            skipped.append(e.problem)
            continue
        complete.append(path)
    return complete, skipped


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
    # Make the rename itself durable (a crash of the machine, not only of the process).
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)`` through a temporary file and a rename: ``path`` is either the
    old file or the complete new one, never a partial write."""
    _atomic_write(path, lambda f: torch.save(obj, f))


class FreqFusionCheckpointer(DetectionCheckpointer):
    """detectron2's :class:`DetectionCheckpointer` (loads ``.pth`` and model-zoo ``.pkl``) that

    * writes checkpoints and the ``last_checkpoint`` tag atomically (temporary file + rename),
      so a run killed while saving resumes from the previous complete checkpoint;
    * verifies a file before loading it (:func:`verify_checkpoint_file`) and raises
      :class:`CheckpointError` for a truncated or corrupt one, or for one that shares no
      weight with the model (another architecture);
    * on resume, skips (with a warning) a damaged last checkpoint and resumes from the newest
      complete one;
    * after loading, names the FreqFusion modules whose weights the checkpoint lacks (e.g. when
      a detectron2 model-zoo FPN model initialises a FreqFusion FPN).
    """

    def __init__(self, model, save_dir="", **kwargs):
        super().__init__(model, save_dir, **kwargs)
        # The argument that named the file being loaded, and the file (for error messages).
        self._argument = "MODEL.WEIGHTS"
        self._loading = ""

    def _is_local(self) -> bool:
        return "://" not in self.save_dir

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        if not self._is_local():
            super().save(name, **kwargs)
            return
        # The payload of fvcore's Checkpointer.save (tests/test_detectron2_contract.py).
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

    def resume_or_load(self, path: str, *, resume: bool = True):
        """Resumes from the newest complete checkpoint of ``save_dir`` when ``resume`` and one
        is tagged, else loads the model weights from ``path`` (``cfg.MODEL.WEIGHTS``).

        Raises:
            CheckpointError: ``path`` cannot be loaded, or no checkpoint of ``save_dir`` is
                complete.
        """
        if not (resume and self.has_checkpoint() and self._is_local()):
            self._argument = "MODEL.WEIGHTS"
            return self.load(path, checkpointables=[])
        self._remove_stale_temporaries()
        complete, skipped = find_resume_checkpoints(self.save_dir)
        for line in skipped:
            logger.warning("Not resuming from a damaged checkpoint: %s", line)
        self._argument = "--resume"
        try:
            for path in complete:
                try:
                    if path != complete[0] or skipped:
                        logger.warning("Resuming from %s, the newest complete checkpoint", path)
                    return self.load(path)
                except CheckpointError as e:
                    # Found only by reading it (e.g. a pickle cut short): nothing was applied.
                    logger.warning("Not resuming from a damaged checkpoint: %s", e)
                    skipped.append(e.problem)
        finally:
            self._argument = "MODEL.WEIGHTS"
        raise CheckpointError(
            os.path.join(self.save_dir, "last_checkpoint"),
            f"names no complete checkpoint ({'; '.join(skipped) or 'no checkpoint files'})",
            argument="--resume",
        )

    def load(self, path, *args, **kwargs):
        try:
            return super().load(path, *args, **kwargs)
        finally:
            # DetectionCheckpointer.load sets this and clears it only when loading succeeds;
            # left set, the next load (the resume fallback) would fail its assertion
            # (tests/test_detectron2_contract.py).
            self._parsed_url_during_load = None

    def _remove_stale_temporaries(self) -> None:
        for tmp in glob.glob(os.path.join(glob.escape(self.save_dir), "*.pth.*.tmp")):
            if self.save_to_disk:
                logger.info("Removing %s, left by a run stopped while saving", tmp)
                os.remove(tmp)

    def _load_file(self, filename: str):
        argument = self._argument
        self._loading = filename
        verify_checkpoint_file(filename, argument=argument)
        try:
            return super()._load_file(filename)
        except _READ_ERRORS as e:
            raise CheckpointError(
                filename, f"cannot be read as a checkpoint ({_first_line(e)})", argument
            ) from e

    def _load_model(self, checkpoint):
        weights = checkpoint.get("model")
        if not isinstance(weights, dict):
            raise CheckpointError(
                self._loading,
                f"holds no model weights (its 'model' entry is a {type(weights).__name__})",
                self._argument,
            )
        checkpoint_keys = list(weights)
        incompatible = super()._load_model(checkpoint)
        model = self.model.module if isinstance(self.model, DistributedDataParallel) else self.model
        self._check_architecture(model, checkpoint_keys, incompatible)
        self._report_freqfusion(model, incompatible)
        return incompatible

    def _check_architecture(self, model, checkpoint_keys: List[str], incompatible) -> None:
        """Raises CheckpointError when the checkpoint set none of the model's parameters."""
        # Parameters only: BatchNorm fills a missing num_batches_tracked by itself.
        model_keys = [name for name, _ in model.named_parameters()]
        if not checkpoint_keys or not model_keys:
            return
        unloaded = set(incompatible.missing_keys) | {k for k, _, _ in incompatible.incorrect_shapes}
        if any(k not in unloaded for k in model_keys):
            return
        shapes = len(incompatible.incorrect_shapes)
        detail = (
            f"all {shapes} shared names have other shapes"
            if shapes
            else f"e.g. it has {checkpoint_keys[0]!r}, the model {model_keys[0]!r}"
        )
        raise CheckpointError(
            self._loading,
            f"matches none of the model's {len(model_keys)} weights ({detail})",
            self._argument,
            expected=f"a checkpoint of the {type(model).__name__} this config builds",
        )

    def _report_freqfusion(self, model, incompatible) -> None:
        missing = set(incompatible.missing_keys)
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
