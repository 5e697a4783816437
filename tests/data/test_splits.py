import numpy as np
import pytest

from tfcourse import UserError
from tfcourse.data import splits


def _grouped_dataset(seed=0):
    """3 classes of 30, 30 and 20 files in recordings of 1-4 files each (a recording holds one class)."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for label, num_files in enumerate((30, 30, 20)):
        sizes = []
        while sum(sizes) < num_files:
            sizes.append(min(int(rng.integers(1, 5)), num_files - sum(sizes)))
        for size in sizes:
            labels += [label] * size
            groups += [f"rec{len(set(groups))}"] * size
    order = rng.permutation(len(labels))  # files of one recording need not be adjacent
    return np.asarray(labels)[order], np.asarray(groups)[order]


def _assert_partition(split, num_files):
    together = np.concatenate([split[name] for name in ("train", "validation", "test")])
    assert sorted(together.tolist()) == list(range(num_files))  # every index exactly once
    assert all(np.array_equal(indices, np.sort(indices)) for indices in split.values())


@pytest.mark.parametrize("seed", range(5))
def test_grouped_split_keeps_recordings_whole_and_stays_stratified(seed):
    labels, groups = _grouped_dataset(seed)
    split = splits.grouped_stratified_split(labels, groups, 0.2, 0.2, seed=seed)
    _assert_partition(split, len(labels))
    group_sets = {name: set(groups[indices]) for name, indices in split.items()}
    assert not group_sets["train"] & group_sets["validation"]
    assert not group_sets["train"] & group_sets["test"]
    assert not group_sets["validation"] & group_sets["test"]
    largest_group = max(np.unique(groups, return_counts=True)[1])
    for name, fraction in (("validation", 0.2), ("test", 0.2)):
        counts = np.bincount(labels[split[name]], minlength=3)
        targets = np.round(np.array([30, 30, 20]) * fraction)
        assert np.all(counts >= 1) and np.all(np.abs(counts - targets) < largest_group), (name, counts)


def test_grouped_split_is_deterministic_from_the_seed():
    labels, groups = _grouped_dataset()
    first = splits.grouped_stratified_split(labels, groups, 0.2, 0.2, seed=3)
    again = splits.grouped_stratified_split(labels, groups, 0.2, 0.2, seed=3)
    assert all(np.array_equal(first[name], again[name]) for name in first)
    other = splits.grouped_stratified_split(labels, groups, 0.2, 0.2, seed=4)
    assert not np.array_equal(first["test"], other["test"])


def test_every_split_a_fraction_asks_for_gets_a_recording():
    # Class 0: recordings of 5, 2, 2 and 1 files, targets 8/1/1: filling by deficit alone gives train the
    # first three and leaves test without class 0; the last two recordings must go to the empty splits.
    labels = np.repeat([0, 1], [10, 10])
    groups = np.array(["a"] * 5 + ["b"] * 2 + ["c"] * 2 + ["d"] + [f"e{i}" for i in range(10)])
    split = splits.grouped_stratified_split(labels, groups, 0.1, 0.1, seed=0)
    _assert_partition(split, 20)
    for indices in split.values():
        assert np.bincount(labels[indices], minlength=2).min() >= 1


def test_a_recording_spanning_classes_goes_whole_with_its_majority_class():
    labels = np.array([0, 0, 1] + [0] * 6 + [1] * 9)
    groups = np.array(["mixed"] * 3 + [f"g{i}" for i in range(15)])
    split = splits.grouped_stratified_split(labels, groups, 0.2, 0.2, seed=1)
    _assert_partition(split, 18)
    homes = [name for name, indices in split.items() if np.isin([0, 1, 2], indices).any()]
    assert len(homes) == 1 and np.isin([0, 1, 2], split[homes[0]]).all()


def test_a_class_too_small_is_a_user_error():
    with pytest.raises(UserError, match="Class 1 has 2 file"):
        splits.grouped_stratified_split(np.array([0] * 10 + [1] * 2), np.arange(12), 0.4, 0.4, seed=0)
    labels = np.repeat([0, 1], [10, 10])
    groups = np.array(["a"] * 5 + ["b"] * 5 + [f"c{i}" for i in range(10)])
    with pytest.raises(UserError, match="Class 0 has 10 file.*only 2 source recording"):
        splits.grouped_stratified_split(labels, groups, 0.2, 0.2, seed=0)
    with pytest.raises(UserError, match="one group per file"):
        splits.grouped_stratified_split(labels, groups[:5], 0.2, 0.2, seed=0)


def test_fold_split_uses_the_named_folds():
    folds = np.array([1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 5])
    split = splits.fold_split(folds, validation_folds=4, test_folds=[5])
    assert split["test"].tolist() == [4, 9, 10]
    assert split["validation"].tolist() == [3, 8]
    assert split["train"].tolist() == [0, 1, 2, 5, 6, 7]
    no_validation = splits.fold_split(folds, validation_folds=[], test_folds=[4, 5])
    assert no_validation["validation"].tolist() == [] and no_validation["train"].tolist() == [0, 1, 2, 5, 6, 7]


def test_fold_split_refuses_overlapping_unknown_or_exhausting_folds():
    folds = np.array([3, 4, 5, 3, 4, 5])
    with pytest.raises(UserError, match=r"\[4\] are named for both"):
        splits.fold_split(folds, 4, [4, 5])
    with pytest.raises(UserError, match=r"\[1\] do not occur.*\[3, 4, 5\]"):
        splits.fold_split(folds, 1, 5)
    with pytest.raises(UserError, match="none is left for training"):
        splits.fold_split(folds, [3, 4], 5)


def test_group_split_keeps_speakers_whole_across_classes():
    speakers = np.repeat([f"s{i}" for i in range(8)], 10)  # every speaker says all 10 words
    split = splits.group_split(speakers, 0.25, 0.25, seed=3)
    assert {k: len(set(speakers[v])) for k, v in split.items()} == {"test": 2, "validation": 2, "train": 4}
    assert sorted(np.concatenate(list(split.values())).tolist()) == list(range(80))
    assert not set(speakers[split["train"]]) & set(speakers[split["test"]])
    again = splits.group_split(speakers, 0.25, 0.25, seed=3)
    assert all(np.array_equal(split[k], again[k]) for k in split)
    with pytest.raises(UserError, match="too few"):
        splits.group_split(np.array(["a", "a", "b"]), 0.25, 0.25, seed=0)
