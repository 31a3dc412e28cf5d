import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunelab.config import DataConfig
from tunelab.data import split_indices
from tunelab.data.split import hold_out_test


def dataset(cases_per_class: list[int], images_per_case: int = 3):
    """(classes, cases): class k has cases_per_class[k] cases of images_per_case images each."""
    classes, cases = [], []
    for k, n_cases in enumerate(cases_per_class):
        for c in range(n_cases):
            classes += [k] * images_per_case
            cases += [f"K{k}C{c}"] * images_per_case
    return np.array(classes), np.array(cases)


CLASSES, CASES = dataset([20, 6, 2, 10])


def test_same_seed_same_split_other_seed_other_split():
    first = split_indices(CLASSES, CASES, DataConfig(), seed=3)
    again = split_indices(CLASSES, CASES, DataConfig(), seed=3)
    other = split_indices(CLASSES, CASES, DataConfig(), seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[1], other[1])


def test_case_split_keeps_cases_together_and_is_stratified():
    train, val = split_indices(CLASSES, CASES, DataConfig(split="case", val_fraction=0.2), 0)
    assert not set(CASES[train]) & set(CASES[val])
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(CLASSES)))
    for k in range(4):  # every class on both sides, even the one with two cases
        assert (CLASSES[train] == k).any() and (CLASSES[val] == k).any()
    fraction = np.bincount(CLASSES[val]) / np.bincount(CLASSES)
    assert fraction[0] == pytest.approx(0.2, abs=0.05)
    assert fraction[3] == pytest.approx(0.2, abs=0.1)


def test_image_split_is_stratified_and_ignores_cases():
    config = DataConfig(split="image", val_fraction=0.25)
    train, val = split_indices(CLASSES, CASES, config, 0)
    expected = 0.25 * np.bincount(CLASSES)  # 15, 4.5, 1.5, 7.5
    assert np.abs(np.bincount(CLASSES[val]) - expected).max() <= 0.5
    assert set(CASES[train]) & set(CASES[val])  # study A's protocol: cases straddle the split
    by_case = split_indices(CLASSES, CASES, DataConfig(split="case", val_fraction=0.25), 0)
    assert not np.array_equal(val, by_case[1])


@pytest.mark.parametrize("split", ["case", "image"])
def test_k_folds_partition_the_data(split: str):
    folds = [
        split_indices(CLASSES, CASES, DataConfig(split=split, folds=4, fold=f), seed=1)
        for f in range(4)
    ]
    vals = np.concatenate([val for _, val in folds])
    assert np.array_equal(np.sort(vals), np.arange(len(CLASSES)))  # each item in one val fold
    for train, val in folds:
        assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(CLASSES)))
        assert len(val) == pytest.approx(len(CLASSES) / 4, rel=0.3)
        if split == "case":
            assert not set(CASES[train]) & set(CASES[val])


def test_a_case_spanning_classes_moves_as_one():
    classes = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    cases = np.array(["X", "X", "X", "Y", "Z", "Z", "W", "W"])
    for seed in range(10):
        train, val = split_indices(classes, cases, DataConfig(val_fraction=0.4), seed)
        assert not set(cases[train]) & set(cases[val])


def test_a_split_that_cannot_be_made_says_why():
    classes, cases = np.zeros(5, int), np.array(["only"] * 5)
    with pytest.raises(ValueError, match="validation side empty"):
        split_indices(classes, cases, DataConfig(), 0)


@settings(max_examples=60)
@given(
    cases_per_class=st.lists(st.integers(1, 8), min_size=1, max_size=5),
    images_per_case=st.integers(1, 4),
    folds=st.sampled_from([0, 3]),
    seed=st.integers(0, 2**16),
)
def test_split_invariants(cases_per_class, images_per_case, folds, seed):
    classes, cases = dataset(cases_per_class, images_per_case)
    if len(set(cases)) < max(2, folds):
        return
    config = DataConfig(folds=folds)
    train, val = split_indices(classes, cases, config, seed)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(classes)))
    assert not set(cases[train]) & set(cases[val])
    if folds == 0:  # hold-out: a class with two or more cases shows on both sides
        for k, n_cases in enumerate(cases_per_class):
            if n_cases >= 2:
                assert (classes[train] == k).any() and (classes[val] == k).any()


def test_the_test_set_is_whole_cases_and_the_same_for_every_seed_and_fold():
    rest, test = hold_out_test(CLASSES, CASES, 0.2, seed=7)
    assert np.array_equal(np.sort(np.concatenate([rest, test])), np.arange(len(CLASSES)))
    assert not set(CASES[rest]) & set(CASES[test])  # grouped by case
    fraction = np.bincount(CLASSES[test], minlength=4) / np.bincount(CLASSES)
    assert fraction[0] == pytest.approx(0.2, abs=0.05) and fraction[3] == pytest.approx(
        0.2, abs=0.1
    )
    assert (CLASSES[test] == 2).any()  # the two-case class gives one case to the test set
    # what the trials of a sweep do: their own seed and fold split the rest, never the test set
    for split in ("case", "image"):
        for seed in range(3):
            for config in (DataConfig(split=split), DataConfig(split=split, folds=3, fold=seed)):
                train, val = split_indices(CLASSES[rest], CASES[rest], config, seed)
                seen = set(rest[train]) | set(rest[val])
                assert seen == set(rest) and not seen & set(test)
                assert not set(CASES[rest[train]]) & set(CASES[test])
    again, other = hold_out_test(CLASSES, CASES, 0.2, 7)[1], hold_out_test(CLASSES, CASES, 0.2, 8)
    assert np.array_equal(test, again) and not np.array_equal(test, other[1])


def test_no_test_set_at_fraction_zero_and_a_clear_error_when_none_can_be_drawn():
    rest, test = hold_out_test(CLASSES, CASES, 0.0, 0)
    assert len(test) == 0 and np.array_equal(rest, np.arange(len(CLASSES)))
    with pytest.raises(ValueError, match=r"test side empty.*data.test_fraction = 0.2"):
        hold_out_test(np.zeros(4, int), np.array(["one case"] * 4), 0.2, 0)
