"""A training sampler whose data order survives a resume.

detectron2's ``TrainingSampler`` draws a new random seed per run (unless ``SEED`` is set) and
restarts its stream when a run is resumed, and ``AspectRatioGroupedDataset`` forms the batches
after loading, so a resumed run sees other images than the interrupted one would have.
:class:`ResumableTrainingSampler` forms the batches from indices (grouped by the aspect ratio
in the dataset dicts, as detectron2 groups them), keeps its seed in the checkpoint and can start
at any iteration: iteration ``i`` of a resumed run gets the images iteration ``i`` of an
uninterrupted run gets.
"""

import itertools
import logging
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts
from detectron2.utils import comm
from torch.utils.data import Sampler

__all__ = ["ResumableTrainingSampler", "build_resumable_train_loader"]

logger = logging.getLogger(__name__)


class ResumableTrainingSampler(Sampler):
    """Infinite stream of shuffled dataset indices for this process, arranged so that each
    consecutive ``batch_size`` of them is one batch, starting at a chosen iteration.

    The global stream is detectron2's (``torch.randperm`` epochs from a ``torch.Generator``
    seeded with ``seed``), split between processes as ``TrainingSampler`` splits it. With
    ``aspect_groups``, the indices of each process go to one bucket per group (landscape /
    portrait, like ``AspectRatioGroupedDataset``) and a batch is emitted when its bucket is
    full.

    The state saved in a checkpoint is the seed (and, to detect a change, the batch layout);
    after loading it, :meth:`set_start_iter` skips the batches already trained on.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        *,
        aspect_groups: Optional[Sequence[int]] = None,
        shuffle: bool = True,
        seed: Optional[int] = None,
    ):
        """
        Args:
            size: number of dataset dicts.
            batch_size: images per batch in this process.
            aspect_groups: group id (0 or 1) of every dict; None puts them in one group.
            shuffle: shuffle each epoch.
            seed: seed of the stream, the same in every process; None draws one shared by all
                processes.
        """
        if size <= 0:
            raise ValueError(f"size: expected a non-empty dataset, got {size} dicts")
        if batch_size <= 0:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
        if aspect_groups is not None and len(aspect_groups) != size:
            raise ValueError(
                f"aspect_groups: expected one group per dict ({size}), got {len(aspect_groups)}"
            )
        self.size = size
        self.batch_size = batch_size
        self.aspect_groups = list(aspect_groups) if aspect_groups is not None else None
        self.shuffle = shuffle
        self.seed = int(comm.shared_random_seed() if seed is None else seed)
        # Set here, not in __iter__, which runs in data-loader workers.
        self.rank = comm.get_rank()
        self.world_size = comm.get_world_size()
        self.start_iter = 0
        self.restored = False

    def _layout(self) -> Dict[str, Any]:
        return {
            "size": self.size,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "shuffle": self.shuffle,
            "grouped": self.aspect_groups is not None,
        }

    def state_dict(self) -> Dict[str, Any]:
        return {"seed": self.seed, **self._layout()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        changed = {k: (state.get(k), v) for k, v in self._layout().items() if state.get(k) != v}
        if changed:
            logger.warning(
                "The data order cannot continue exactly: the checkpoint's sampler had %s",
                ", ".join(f"{k}={old} (now {new})" for k, (old, new) in changed.items()),
            )
        self.restored = True

    def set_start_iter(self, start_iter: int) -> None:
        """Skip the first ``start_iter`` batches (the iterations already trained)."""
        if start_iter < 0:
            raise ValueError(f"start_iter: expected >= 0, got {start_iter}")
        self.start_iter = start_iter

    def _global_indices(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed)
        while True:
            if self.shuffle:
                yield from torch.randperm(self.size, generator=g).tolist()
            else:
                yield from range(self.size)

    def batches(self) -> Iterator[List[int]]:
        """This process's batches of indices, from iteration 0."""
        local = itertools.islice(self._global_indices(), self.rank, None, self.world_size)
        if self.aspect_groups is None:
            while True:
                yield list(itertools.islice(local, self.batch_size))
        buckets: Tuple[List[int], List[int]] = ([], [])
        for index in local:
            bucket = buckets[self.aspect_groups[index]]
            bucket.append(index)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                del bucket[:]

    def __iter__(self) -> Iterator[int]:
        for batch in itertools.islice(self.batches(), self.start_iter, None):
            yield from batch

    def __len__(self) -> int:
        raise TypeError("ResumableTrainingSampler is infinite")


def _aspect_groups(dicts: Sequence[Dict[str, Any]]) -> Optional[List[int]]:
    """0 for landscape, 1 otherwise (as AspectRatioGroupedDataset); None without sizes."""
    if not all("width" in d and "height" in d for d in dicts):
        return None
    return [0 if d["width"] > d["height"] else 1 for d in dicts]


def build_resumable_train_loader(cfg, mapper):
    """detectron2's ``build_detection_train_loader`` with a :class:`ResumableTrainingSampler`
    (for ``DATALOADER.SAMPLER_TRAIN`` "TrainingSampler"; other samplers are detectron2's own,
    and their data order is not restored on resume).

    Returns:
        ``(data_loader, sampler)``; ``sampler`` is None for detectron2's samplers.
    """
    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        logger.warning(
            "DATALOADER.SAMPLER_TRAIN=%s: a resumed run will not see the images in the order "
            "an uninterrupted run would",
            cfg.DATALOADER.SAMPLER_TRAIN,
        )
        return build_detection_train_loader(cfg, mapper=mapper), None
    dicts = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        min_keypoints=(
            cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0
        ),
        proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
    )
    world_size = comm.get_world_size()
    if cfg.SOLVER.IMS_PER_BATCH % world_size:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH: {cfg.SOLVER.IMS_PER_BATCH} images cannot be split between "
            f"{world_size} processes; expected a multiple of {world_size}"
        )
    groups = _aspect_groups(dicts) if cfg.DATALOADER.ASPECT_RATIO_GROUPING else None
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING and groups is None:
        logger.info("The dataset dicts have no width/height: batches mix aspect ratios")
    sampler = ResumableTrainingSampler(
        len(dicts),
        cfg.SOLVER.IMS_PER_BATCH // world_size,
        aspect_groups=groups,
        seed=cfg.SEED if cfg.SEED >= 0 else None,
    )
    # The sampler already arranges the indices in batches: batch them in order.
    loader = build_detection_train_loader(
        cfg, mapper=mapper, dataset=dicts, sampler=sampler, aspect_ratio_grouping=False
    )
    return loader, sampler
