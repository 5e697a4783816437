"""Train/validation/test splits that keep related files apart: whole source recordings, or fixed folds.

Clips cut from one recording (ESC-50 takes, one speaker's words) sound alike; a split that puts
some in train and some in test measures memory, not generalisation. Both splits here return
split name -> sorted file indices, each index in exactly one split.
"""

import numpy as np

from tfcourse import UserError
from tfcourse.data.images import SPLITS


def grouped_stratified_split(labels, groups, validation_fraction, test_fraction, seed):
    """Whole groups to train/validation/test, per class as near the fractions as group sizes allow.

    A group belongs to the class most of its files have (ties: the first class). Per class, its groups
    are shuffled by the seed and dealt largest first, each to the split furthest below its file target
    (round(files * fraction), as `images.stratified_split`), holding back enough groups that every split
    with a target gets at least one. No group is ever in two splits.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    if len(labels) != len(groups):
        raise UserError(f"Got {len(labels)} label(s) but {len(groups)} group(s); give one group per file.")
    rng = np.random.default_rng(seed)
    class_values, class_of = np.unique(labels, return_inverse=True)
    _, group_of = np.unique(groups, return_inverse=True)
    counts = np.zeros((group_of.max(initial=-1) + 1, len(class_values)), dtype=int)
    np.add.at(counts, (group_of, class_of), 1)
    group_class, group_sizes = counts.argmax(axis=1), counts.sum(axis=1)
    chosen = {name: [] for name in SPLITS}
    for class_index, label in enumerate(class_values):
        class_groups = rng.permutation(np.flatnonzero(group_class == class_index))
        class_groups = class_groups[np.argsort(-group_sizes[class_groups], kind="stable")]  # ties keep the seeded order
        for name, members in _deal(class_groups, group_sizes, label, validation_fraction, test_fraction).items():
            chosen[name] += members
    return {name: np.flatnonzero(np.isin(group_of, members)) for name, members in chosen.items()}


def _deal(class_groups, group_sizes, label, validation_fraction, test_fraction):
    """One class's groups (largest first) -> split -> groups, filling each split towards its file target."""
    num_files = int(group_sizes[class_groups].sum())
    targets = {"test": int(round(num_files * test_fraction)), "validation": int(round(num_files * validation_fraction))}
    targets["train"] = num_files - targets["test"] - targets["validation"]
    if targets["train"] < 1:
        raise UserError(
            f"Class {label} has {num_files} file(s): too few to split into train, validation and test "
            "with these fractions."
        )
    needed = [name for name in SPLITS if targets[name] > 0]
    if len(class_groups) < len(needed):
        raise UserError(
            f"Class {label} has {num_files} file(s) from only {len(class_groups)} source recording(s): too few to give "
            f"each of {needed} whole recordings. Lower the fractions or use fewer splits."
        )
    dealt, filled = {name: [] for name in SPLITS}, {name: 0 for name in SPLITS}
    for position, group in enumerate(class_groups):
        empty = [name for name in needed if not dealt[name]]
        candidates = empty if len(class_groups) - position <= len(empty) else needed
        name = max(candidates, key=lambda n: targets[n] - filled[n])
        dealt[name].append(int(group))
        filled[name] += int(group_sizes[group])
    return dealt


def fold_split(folds, validation_folds, test_folds):
    """Predefined folds (e.g. ESC-50's five) -> split -> sorted indices; train is every fold not named."""
    folds = np.asarray(folds)
    validation, test = _fold_set(validation_folds), _fold_set(test_folds)
    if validation & test:
        raise UserError(f"Fold(s) {sorted(validation & test)} are named for both validation and test.")
    present = set(np.unique(folds).tolist())
    if (validation | test) - present:
        unknown = sorted((validation | test) - present)
        raise UserError(f"Fold(s) {unknown} do not occur in the data (its folds: {sorted(present)}).")
    if not present - validation - test:
        raise UserError(f"Folds {sorted(present)} are all named for validation or test; none is left for training.")
    in_validation, in_test = np.isin(folds, list(validation)), np.isin(folds, list(test))
    return {
        "train": np.flatnonzero(~in_validation & ~in_test),
        "validation": np.flatnonzero(in_validation),
        "test": np.flatnonzero(in_test),
    }


def _fold_set(value):
    return {int(fold) for fold in np.atleast_1d(value)}


def group_split(groups, validation_fraction, test_fraction, seed):
    """Whole groups to train/validation/test, for groups that span every class (speakers who say every word).

    The distinct groups are shuffled by the seed; the first round(n * test_fraction) (at least one) go to
    test, the next round(n * validation_fraction) (at least one) to validation, the rest to train.
    """
    unique = np.random.default_rng(seed).permutation(np.unique(np.asarray(groups)))
    num_test = max(1, int(round(len(unique) * test_fraction)))
    num_validation = max(1, int(round(len(unique) * validation_fraction)))
    if len(unique) - num_test - num_validation < 1:
        raise UserError(f"{len(unique)} group(s) (speakers or recordings) are too few for train, validation and test.")
    chosen = {"test": unique[:num_test], "validation": unique[num_test : num_test + num_validation],
              "train": unique[num_test + num_validation :]}
    return {name: np.flatnonzero(np.isin(groups, members)) for name, members in chosen.items()}
