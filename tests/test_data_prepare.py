import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tunelab.config import TrialConfig
from tunelab.data import PreparedData, TrainBatches, prepare
from tunelab.data.batches import MAX_WORKERS, BatchSource, default_workers

CLASSES = {"Alpha": 6, "Beta": 3, "Gamma": 2}  # cases per class, 3 images each: 33 images


@pytest.fixture
def dataset(make_png_dataset) -> Path:
    return make_png_dataset("ebhi", CLASSES, per_case=3, size=40)


@pytest.fixture
def config(dataset: Path, tmp_path: Path):
    def make(**flat) -> TrialConfig:
        base = {
            "data.root": str(dataset),
            "data.cache_dir": str(tmp_path / "cache"),
            "data.input_size": 32,
            "model.depth": 3,
            "train.batch_size": 8,
        }
        return TrialConfig().replace(**{**base, **flat})

    return make


def all_batches(data: PreparedData, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*data.train.epoch(epoch), strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_shapes_dtypes_and_fixed_normalisation(config):
    data = prepare(config())
    nv = len(data.val_images)
    assert data.val_images.shape == (nv, 1, 32, 32) and data.val_images.dtype == torch.float32
    assert data.val_masks.shape == (nv, 32, 32) and data.val_masks.dtype == torch.int64
    assert data.val_classes.shape == (nv,) and data.val_classes.dtype == torch.int64
    assert data.class_names == ("Alpha", "Beta", "Gamma")
    assert data.val_images.min() >= 0.0 and data.val_images.max() <= 1.0
    steps = data.val_images * 255  # x / 255 exactly
    assert torch.allclose(steps, steps.round(), atol=1e-4)
    x, y = next(iter(data.train.epoch(1)))
    assert x.shape == (8, 1, 32, 32) and x.dtype == torch.float32
    assert y.shape == (8, 32, 32) and y.dtype == torch.int64 and set(y.unique().tolist()) <= {0, 1}
    freq = data.pixel_class_frequencies
    assert freq.shape == (2,) and freq.sum().item() == pytest.approx(1.0)


def test_report_accounts_for_every_image(config, dataset: Path):
    (dataset / "Beta" / "label" / "B00-1-400-000.png").unlink()
    report = prepare(config()).report
    assert report.images_per_class == {"Alpha": 18, "Beta": 8, "Gamma": 6}
    for name, count in report.images_per_class.items():
        held_out = report.val_per_class[name] + report.test_per_class[name]
        assert report.train_per_class[name] + held_out == count
        assert report.train_per_class[name] > 0 and report.test_per_class[name] > 0
    # three sides need three cases: Gamma's two go to training and to the test set
    assert report.val_per_class["Alpha"] > 0 and report.val_per_class["Beta"] > 0
    assert report.train_per_class_balanced == report.train_per_class  # no balancing asked
    assert report.skipped == [
        (str(dataset / "Beta" / "image" / "B00-1-400-000.png"), report.skipped[0][1])
    ]
    assert 0.2 < report.foreground_fraction < 0.3  # the fixture's masks are a quarter foreground
    assert not report.cache_hit and Path(report.cache_path).is_dir()
    assert json.loads(json.dumps(report.to_dict()))["layout"] == "ebhi"
    text = report.to_text()
    assert "Gamma" in text and "image without label" in text and "B00-1-400-000.png" in text


def test_dataset_normalisation_gives_zero_mean_unit_std_on_train(config):
    data = prepare(config(**{"data.normalize": "dataset", "data.channels": 3}))
    x, _ = all_batches(data, 1)
    assert x.shape[1] == 3
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=0.05)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=0.05)
    assert data.report.normalize_std != [1.0, 1.0, 1.0]  # val was normalised the same way
    assert abs(data.val_images.mean().item()) < 0.5


def test_epochs_are_reproducible_and_differ_from_each_other(config):
    first, second = prepare(config()), prepare(config())
    x1, y1 = all_batches(first, 3)
    x2, y2 = all_batches(second, 3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, all_batches(first, 4)[0])  # another epoch, another order
    other = prepare(config(seed=1)).val_images  # the seed also moves the split
    assert other.shape != first.val_images.shape or not torch.equal(other, first.val_images)


def test_augmented_batches_are_the_same_in_worker_processes(config):
    data = prepare(config(**{"data.augment": "flip_rotate_scale"}))
    in_process = TrainBatches(data.train.source, workers=0)
    in_workers = TrainBatches(data.train.source, workers=2)
    for epoch in (1, 2):
        x0, y0 = zip(*in_process.epoch(epoch), strict=True)
        x2, y2 = zip(*in_workers.epoch(epoch), strict=True)
        assert all(torch.equal(a, b) for a, b in zip(x0 + y0, x2 + y2, strict=True))
    unaugmented = prepare(config())  # same order (same seed and epoch), other pixels
    assert not torch.equal(torch.cat(x0), all_batches(unaugmented, 2)[0])


@pytest.mark.parametrize(
    ("cpus", "workers"), [(0.5, 0), (1, 0), (2, 1), (3.5, 2), (64, MAX_WORKERS)]
)
def test_the_trial_s_cpus_bound_the_augmentation_workers(cpus, workers):
    # one CPU stays with the training loop; a fraction of one leaves none for workers
    assert default_workers(cpus) == workers


def test_prepare_gives_the_trial_s_cpus_to_the_loader_and_reports_them(config):
    data = prepare(config(**{"data.augment": "flip_rotate_scale"}), cpus=1)
    assert data.train.workers == 0 and data.report.loader_workers == 0
    assert "augmentation workers: 0" in data.report.to_text()
    augmenting = prepare(config(**{"data.augment": "flip_rotate_scale"}), cpus=3)
    assert augmenting.train.workers == 2 and augmenting.report.loader_workers == 2
    # without augmentation a thread makes the batches, whatever the CPUs: no worker processes
    plain = prepare(config(), cpus=3)
    assert plain.train.workers == 0 and plain.report.loader_workers == 0


def test_crop_flip_trains_on_crops_and_validates_on_full_images(config):
    data = prepare(config(**{"data.augment": "crop_flip", "data.crop_size": 16}))
    x, y = next(iter(TrainBatches(data.train.source, workers=0).epoch(1)))
    assert x.shape == (8, 1, 16, 16) and y.shape == (8, 16, 16)
    assert data.val_images.shape[-2:] == (32, 32)


def test_balancing_copies_only_the_training_split(config):
    plain, balanced = prepare(config()), prepare(config(**{"data.balance": True}))
    report = balanced.report
    majority = max(report.train_per_class.values())
    assert set(report.train_per_class_balanced.values()) == {majority}
    assert report.val_per_class == plain.report.val_per_class
    assert torch.equal(balanced.val_images, plain.val_images)
    assert len(balanced.train) == (3 * majority) // 8 + ((3 * majority) % 8 > 1)


def test_trailing_batch_of_one_is_dropped():
    def batches(n: int) -> TrainBatches:
        images, masks = np.zeros((n, 8, 8, 1), np.uint8), np.zeros((n, 8, 8), np.uint8)
        none = np.zeros(0, np.int64)
        source = BatchSource(images, masks, none, "none", 4, 8, 0, np.zeros(1), np.ones(1))
        return TrainBatches(source, workers=0)

    assert len(batches(17)) == 2 and [len(x) for x, _ in batches(17).epoch(0)] == [8, 8]
    assert len(batches(18)) == 3 and [len(x) for x, _ in batches(18).epoch(0)] == [8, 8, 2]


def test_filters_drop_and_report(config, dataset: Path):
    empty = dataset / "Alpha" / "image" / "A00-1-400-000.png"  # pairs are named by their image
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(dataset / "Alpha" / "label" / empty.name)
    blank = dataset / "Alpha" / "image" / "A01-1-400-000.png"  # glass where the mask says tissue
    Image.fromarray(np.full((40, 40, 3), 250, np.uint8)).save(blank)
    report = prepare(config()).report
    assert report.filtered == []
    report = prepare(
        config(**{"data.min_foreground": 0.01, "data.blank_tissue_filter": True})
    ).report
    reasons = dict(report.filtered)
    assert set(reasons) == {str(empty), str(blank)}
    assert "data.min_foreground" in reasons[str(empty)]
    assert "blank" in reasons[str(blank)]
    splits = (report.train_per_class, report.val_per_class, report.test_per_class)
    assert sum(sum(split.values()) for split in splits) == 31


def test_multiclass_label_beyond_num_classes_is_a_clear_error(config, dataset: Path):
    for label in dataset.glob("*/label/*.png"):  # 0/255 -> classes 0/1
        Image.fromarray((np.asarray(Image.open(label)) > 0).astype(np.uint8)).save(label)
    bad = dataset / "Gamma" / "label" / "G00-1-400-000.png"
    Image.fromarray(np.full((40, 40), 5, np.uint8)).save(bad)
    cfg = config(**{"data.task": "multiclass", "data.num_classes": 3, "train.loss": "ce"})
    with pytest.raises(ValueError, match=r"holds class 5 but data\.num_classes = 3") as error:
        prepare(cfg)
    assert "G00-1-400-000.png holds class 5" in str(error.value)
    assert "(1 label(s) affected)" in str(error.value)


def classes_trained_on(data: PreparedData, greys: dict[str, int]) -> dict[str, int]:
    """Images per class in what the loader trains on (originals and balancing copies), where
    each class's images are one flat grey (`greys`), so an image's pixels tell its class."""
    source = data.train.source
    values = source.images[source.items][:, 0, 0, 0].astype(int)  # (N + M,): one pixel each
    return {name: int((abs(values - grey) <= 2).sum()) for name, grey in greys.items()}


def test_balance_target_is_each_smaller_class_s_count_in_the_training_set(config, dataset: Path):
    greys = {"Alpha": 40, "Beta": 120, "Gamma": 200}
    for name, grey in greys.items():
        for path in (dataset / name / "image").glob("*.png"):
            Image.fromarray(np.full((40, 40, 3), grey, np.uint8)).save(path)
    plain = prepare(config())
    counts = classes_trained_on(plain, greys)  # the training split, unbalanced
    assert sum(counts.values()) == len(plain.train.source.items)  # every image told apart
    middle = sorted(counts.values())[1]
    assert middle + 1 < max(counts.values())  # a target between the classes' counts
    for target in (middle + 1, max(counts.values()) + 3):
        data = prepare(config(**{"data.balance": True, "data.balance_target": target}))
        expected = {name: max(count, target) for name, count in counts.items()}
        assert classes_trained_on(data, greys) == expected  # raised to it, never cut
        assert data.report.train_per_class_balanced == expected
