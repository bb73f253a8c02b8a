"""ResumableTrainingSampler: the batches detectron2's TrainingSampler + AspectRatioGroupedDataset
form, from any iteration, with the seed carried by the checkpoint state."""

import itertools

import pytest
from detectron2.data.common import AspectRatioGroupedDataset
from detectron2.data.samplers import TrainingSampler

from freqfusion_d2.data.samplers import ResumableTrainingSampler

SIZES = [(640, 480), (480, 640), (500, 500), (800, 600), (300, 600), (640, 427), (427, 640)]


def _dicts(n=23):
    return [{"image_id": i, "width": SIZES[i % 7][0], "height": SIZES[i % 7][1]} for i in range(n)]


def _groups(dicts):
    return [0 if d["width"] > d["height"] else 1 for d in dicts]


def _flat_batches(sampler, count, batch_size):
    indices = iter(sampler)
    return [list(itertools.islice(indices, batch_size)) for _ in range(count)]


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_same_batches_as_detectron2(batch_size):
    dicts = _dicts()
    d2_stream = (dicts[i] for i in TrainingSampler(len(dicts), seed=5))
    d2_batches = AspectRatioGroupedDataset(d2_stream, batch_size)
    expected = [[d["image_id"] for d in b] for b in itertools.islice(d2_batches, 30)]
    ours = ResumableTrainingSampler(len(dicts), batch_size, aspect_groups=_groups(dicts), seed=5)
    assert _flat_batches(ours, 30, batch_size) == expected


def test_starts_at_any_iteration_and_keeps_its_seed():
    dicts = _dicts()
    first = ResumableTrainingSampler(len(dicts), 2, aspect_groups=_groups(dicts))
    full = _flat_batches(first, 40, 2)
    # A resumed run: another random seed until the checkpoint state is loaded.
    resumed = ResumableTrainingSampler(len(dicts), 2, aspect_groups=_groups(dicts), seed=123)
    assert not resumed.restored
    resumed.load_state_dict(first.state_dict())
    assert resumed.restored and resumed.seed == first.seed
    resumed.set_start_iter(17)
    assert _flat_batches(resumed, 23, 2) == full[17:]


def test_ungrouped_and_unshuffled():
    sampler = ResumableTrainingSampler(5, 2, shuffle=False, seed=0)
    assert _flat_batches(sampler, 4, 2) == [[0, 1], [2, 3], [4, 0], [1, 2]]
    sampler.set_start_iter(1)
    assert _flat_batches(sampler, 1, 2) == [[2, 3]]


def test_layout_change_is_reported(caplog):
    state = ResumableTrainingSampler(10, 2, seed=1).state_dict()
    other = ResumableTrainingSampler(10, 4, seed=2)
    other.load_state_dict(state)
    assert other.seed == 1
    assert "batch_size=2 (now 4)" in caplog.text


def test_bad_arguments():
    with pytest.raises(ValueError, match="size: expected a non-empty dataset"):
        ResumableTrainingSampler(0, 2)
    with pytest.raises(ValueError, match="aspect_groups: expected one group per dict"):
        ResumableTrainingSampler(3, 2, aspect_groups=[0, 1])
    with pytest.raises(ValueError, match="start_iter"):
        ResumableTrainingSampler(3, 2).set_start_iter(-1)
