import numpy as np
import pytest

from tunelab.data.augment import balance_copies, derive_seed, pipeline


def encoded_pair(size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A mask of blocks and an image whose grey value encodes it: 200 on the mask, 40 off it."""
    rng = np.random.default_rng(seed)
    mask = np.kron(rng.integers(0, 2, (8, 8)), np.ones((size // 8, size // 8))).astype(np.uint8)
    image = np.where(mask > 0, 200, 40).astype(np.uint8)[..., None]  # (H, W, 1)
    return image, mask


@pytest.mark.parametrize("seed", range(8))
def test_flip_rotate_scale_moves_image_and_mask_together(seed: int):
    image, mask = encoded_pair()
    transform = pipeline("flip_rotate_scale", crop_size=32)
    transform.set_random_seed(seed)
    out = transform(image=image, mask=mask)
    new_image, new_mask = out["image"].reshape(mask.shape), out["mask"]
    assert new_mask.dtype == np.uint8 and set(np.unique(new_mask)) <= {0, 1}  # nearest: no blends
    agree = (new_image > 120) == (new_mask > 0)
    assert agree.mean() > 0.97  # only bilinear edge pixels of the image may disagree


@pytest.mark.parametrize("seed", range(4))
def test_crop_flip_crops_to_crop_size_and_keeps_alignment(seed: int):
    image, mask = encoded_pair()
    transform = pipeline("crop_flip", crop_size=24)
    transform.set_random_seed(seed)
    out = transform(image=image, mask=mask)
    assert out["image"].shape[:2] == out["mask"].shape == (24, 24)
    assert np.array_equal(
        out["image"].reshape(24, 24) > 120, out["mask"] > 0
    )  # exact: no resampling


def test_pipelines_by_name():
    assert pipeline("none", 32) is None
    balancing_copy = pipeline("none", 32, extra_copy=True)
    names = [type(t).__name__ for t in balancing_copy.transforms]
    assert names == ["HorizontalFlip", "VerticalFlip", "Affine"]  # copies always get study A's
    names = [type(t).__name__ for t in pipeline("crop_flip", 16, extra_copy=True).transforms]
    assert "Affine" in names and "RandomCrop" in names  # and are cropped like the originals


def test_same_seed_same_augmentation():
    image, mask = encoded_pair()
    transform = pipeline("flip_rotate_scale", 32)
    results = []
    for seed in (5, 5, 6, 7):
        transform.set_random_seed(seed)
        results.append([transform(image=image, mask=mask)["mask"] for _ in range(4)])
    assert all(np.array_equal(a, b) for a, b in zip(results[0], results[1], strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(results[2], results[3], strict=True))


def test_derive_seed_separates_neighbouring_keys():
    seeds = {derive_seed(seed, epoch) for seed in range(5) for epoch in range(5)}
    assert len(seeds) == 25
    assert derive_seed(1, 2) == derive_seed(1, 2)


def test_balance_copies_reach_the_majority_count():
    classes = np.array([0] * 10 + [1] * 3 + [2] * 7)
    copies = balance_copies(classes)
    balanced = np.bincount(np.concatenate([classes, classes[copies]]))
    assert balanced.tolist() == [10, 10, 10]
    counts = np.bincount(copies, minlength=20)  # spread evenly over a class's members
    assert set(counts[10:13]) == {2, 3} and set(counts[13:20]) == {0, 1}


def test_balance_target_raises_small_classes_and_never_drops_large_ones():
    classes = np.array([0] * 10 + [1] * 3)
    copies = balance_copies(classes, target=6)
    assert np.bincount(np.concatenate([classes, classes[copies]])).tolist() == [10, 6]
    assert len(balance_copies(np.array([0, 0, 1, 1]))) == 0
