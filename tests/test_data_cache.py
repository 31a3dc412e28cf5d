import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tunelab.config import DataConfig
from tunelab.data import load
from tunelab.data.cache import ARRAY_NAMES, _write_entry, cache_dir
from tunelab.data.publish import FOLDER_MODE, publish
from tunelab.data.synthetic import ensure_synthetic


@pytest.fixture
def cfg(tmp_path: Path):
    def make(root: Path, **overrides) -> DataConfig:
        return DataConfig(root=str(root), cache_dir=str(tmp_path / "cache"), **overrides)

    return make


def test_load_gives_arrays_at_input_size_and_channels(make_png_dataset, cfg):
    root = make_png_dataset("ebhi", {"Alpha": 2, "Beta": 1}, per_case=2, size=40)
    grey = load(cfg(root, input_size=16, channels=1))
    assert grey.images.shape == (6, 16, 16, 1) and grey.images.dtype == np.uint8
    assert grey.masks.shape == (6, 16, 16) and grey.masks.dtype == np.uint8
    assert set(np.unique(grey.masks)) == {0, 1}
    assert grey.class_names == ("Alpha", "Beta")
    assert grey.classes.tolist() == [0, 0, 0, 0, 1, 1]
    assert grey.case_names.tolist() == ["A00", "A00", "A01", "A01", "B00", "B00"]
    assert grey.source_sizes.tolist() == [[40, 40]] * 6
    assert grey.layout == "ebhi" and grey.paths()[0].endswith("A00-1-400-000.png")
    rgb = load(cfg(root, input_size=16, channels=3))
    assert rgb.images.shape == (6, 16, 16, 3)
    assert not np.array_equal(rgb.images[..., 0], rgb.images[..., 1])  # colour is kept


def test_binary_labels_binarised_at_half_of_full_scale(make_png_dataset, cfg):
    root = make_png_dataset("generic", {"Alpha": 1}, per_case=1, size=8)
    label = np.array([[0, 100, 127, 128, 200, 255, 1, 254]] * 8, np.uint8)
    Image.fromarray(label).save(root / "masks" / "A00-1-400-000.png")
    mask = load(cfg(root, input_size=8)).masks[0]
    assert mask[0].tolist() == [0, 0, 0, 1, 1, 1, 0, 1]


def test_multiclass_labels_are_kept(make_png_dataset, cfg):
    root = make_png_dataset("generic", {"Alpha": 1}, per_case=1, size=8)
    label = np.tile(np.array([0, 1, 2, 1], np.uint8), (8, 2))
    Image.fromarray(label).save(root / "masks" / "A00-1-400-000.png")
    mask = load(cfg(root, input_size=8, task="multiclass")).masks[0]
    assert np.array_equal(mask, label)


def test_broken_pairs_are_skipped_with_path_and_reason(make_png_dataset, cfg):
    root = make_png_dataset("ebhi", {"Alpha": 2}, per_case=2, size=40)
    corrupt = root / "Alpha" / "image" / "A00-1-400-000.png"
    corrupt.write_bytes(corrupt.read_bytes()[:60])  # truncated mid-stream
    garbage = root / "Alpha" / "label" / "A00-1-400-001.png"
    garbage.write_bytes(b"definitely not a png")
    other_size = root / "Alpha" / "label" / "A01-1-400-000.png"
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(other_size)
    data = load(cfg(root, input_size=16))
    reasons = dict(data.skipped)
    assert "corrupt" in reasons[str(corrupt)]
    assert "corrupt" in reasons[str(garbage)]
    assert "label size 30x20 differs from image size 40x40" in reasons[str(other_size)]
    assert len(data.images) == 1 and data.paths()[0].endswith("A01-1-400-001.png")
    again = load(cfg(root, input_size=16))  # from the cache: the decode problems are still there
    assert again.cache_hit and dict(again.skipped) == reasons


def test_no_readable_pair_is_an_error_naming_the_folder(make_png_dataset, cfg):
    root = make_png_dataset("generic", {"Alpha": 1}, per_case=2)
    for image in (root / "images").iterdir():
        image.write_bytes(b"junk")
    with pytest.raises(ValueError, match="no readable image/label pair") as error:
        load(cfg(root))
    assert str(root) in str(error.value)


def test_second_load_hits_the_cache_with_identical_arrays(make_png_dataset, cfg):
    root = make_png_dataset("ebhi", {"Alpha": 2, "Beta": 2})
    first, second = load(cfg(root, input_size=16)), load(cfg(root, input_size=16))
    assert not first.cache_hit and second.cache_hit
    assert first.cache_path == second.cache_path
    for name in ("images", "masks", "classes", "source_sizes", "file_names", "case_names"):
        assert np.array_equal(getattr(first, name), getattr(second, name))
    assert first.class_names == second.class_names


def test_cache_key_follows_content_size_channels_and_task(make_png_dataset, cfg):
    root = make_png_dataset("ebhi", {"Alpha": 2})
    base = load(cfg(root, input_size=16)).cache_path
    paths = {
        load(cfg(root, input_size=32)).cache_path,
        load(cfg(root, input_size=16, channels=3)).cache_path,
        load(cfg(root, input_size=16, task="multiclass")).cache_path,
    }
    assert base not in paths and len(paths) == 3
    label = root / "Alpha" / "label" / "A00-1-400-000.png"
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(label)  # same name, new content
    changed = load(cfg(root, input_size=16))
    assert not changed.cache_hit and changed.cache_path != base


def test_moved_dataset_hits_and_reports_its_new_paths(make_png_dataset, cfg):
    root = make_png_dataset("ebhi", {"Alpha": 2})
    first = load(cfg(root))
    moved = shutil.move(root, root.with_name("moved"))
    second = load(cfg(moved))
    assert second.cache_hit and second.cache_path == first.cache_path
    assert second.paths()[0].startswith(str(moved))


def test_unwritable_cache_dir_is_a_clear_error(make_png_dataset, tmp_path: Path):
    root = make_png_dataset("ebhi", {"Alpha": 2})
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    config = DataConfig(root=str(root), cache_dir=str(blocker / "cache"))
    with pytest.raises(OSError, match="cannot write the data cache") as error:
        load(config)
    assert str(blocker) in str(error.value) and "TUNELAB_CACHE" in str(error.value)


def test_cache_dir_from_config_then_environment_then_home(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "env"))
    assert cache_dir(DataConfig(cache_dir=str(tmp_path / "cfg"))) == tmp_path / "cfg"
    assert cache_dir(DataConfig()) == tmp_path / "env"
    monkeypatch.delenv("TUNELAB_CACHE")
    assert cache_dir(DataConfig()) == Path.home() / ".cache" / "tunelab"


def test_empty_root_loads_the_fixed_synthetic_dataset(make_png_dataset, monkeypatch, tmp_path):
    calls = []
    fake_root = make_png_dataset("ebhi", {"Alpha": 2})

    def fake_ensure(cache_dir, n_images, seed=0, size=128, task="binary"):
        calls.append((cache_dir, n_images, seed, size, task))
        return fake_root

    monkeypatch.setattr("tunelab.data.cache.ensure_synthetic", fake_ensure)
    data = load(DataConfig(cache_dir=str(tmp_path / "cache"), synthetic_images=40, task="binary"))
    assert calls == [(tmp_path / "cache", 40, 0, 128, "binary")]
    assert data.root == str(fake_root)


def test_concurrent_loads_agree_and_a_lost_write_race_is_harmless(make_png_dataset, cfg):
    root = make_png_dataset("ebhi", {"Alpha": 2, "Beta": 2})
    with ThreadPoolExecutor(4) as pool:  # as Ray trials starting together on one machine
        results = list(pool.map(lambda _: load(cfg(root)), range(4)))
    assert len({r.cache_path for r in results}) == 1
    assert all(np.array_equal(r.images, results[0].images) for r in results)
    entry = Path(results[0].cache_path)
    _write_entry(entry, {name: np.zeros(1) for name in ARRAY_NAMES}, {})
    assert load(cfg(root)).cache_hit  # the late writer left the winner's entry alone
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]  # no temp folders left


def test_publish_is_all_or_nothing_with_one_permission_rule(tmp_path):
    final = tmp_path / "entry"
    publish(final, lambda folder: (folder / "a.txt").write_text("complete"))
    assert (final / "a.txt").read_text() == "complete"
    assert final.stat().st_mode & 0o777 == FOLDER_MODE == 0o755  # other users can read a cache
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]  # no temporary folder left

    def crash(folder):
        (folder / "half.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        publish(tmp_path / "broken", crash)
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]  # nothing half-written is visible

    publish(final, lambda folder: (folder / "b.txt").write_text("the loser's copy"))
    assert sorted(p.name for p in final.iterdir()) == ["a.txt"]  # the winner's entry stays
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_both_cache_writers_publish_readable_folders(tmp_path):
    root = ensure_synthetic(tmp_path / "cache", 12, size=32)
    loaded = load(DataConfig(cache_dir=str(tmp_path / "cache"), synthetic_images=12))
    for folder in (root, Path(loaded.cache_path)):
        assert folder.stat().st_mode & 0o777 == 0o755, folder


def test_a_given_fingerprint_opens_the_entry_without_listing_or_hashing(
    make_png_dataset, cfg, monkeypatch
):
    root = make_png_dataset("ebhi", {"Alpha": 2, "Beta": 1}, per_case=2, size=40)
    (root / "Alpha" / "image" / "stray.png").write_bytes(b"no label for this one")
    broken = root / "Beta" / "label" / "B00-1-400-000.png"
    broken.write_bytes(b"definitely not a png")
    driver = load(cfg(root, input_size=16))  # what a sweep's driver does once
    assert driver.hashed and driver.skipped
    from tunelab.data import cache

    def forbidden(*args, **kwargs):
        raise AssertionError("a trial given the fingerprint must not list or hash the files")

    monkeypatch.setattr(cache, "scan", forbidden)
    monkeypatch.setattr(cache, "fingerprint", forbidden)
    trial = load(cfg(root, input_size=16), {driver.root: driver.fingerprint})
    assert not trial.hashed and trial.cache_hit and trial.fingerprint == driver.fingerprint
    assert trial.cache_path == driver.cache_path and trial.layout == driver.layout
    assert np.array_equal(trial.images, driver.images) and np.array_equal(
        trial.paths(), driver.paths()
    )
    assert sorted(trial.skipped) == sorted(driver.skipped)  # the stray file and the broken label


def test_opening_an_entry_reads_nothing_that_grows_with_the_dataset(make_png_dataset, cfg):
    small = make_png_dataset("ebhi", {"Alpha": 2}, per_case=1, size=8, name="small")
    large = make_png_dataset("ebhi", {"Alpha": 2}, per_case=8, size=8, name="large")
    driver = {root: load(cfg(root, input_size=8)) for root in (small, large)}
    meta = [Path(driver[root].cache_path, "meta.json").read_bytes() for root in (small, large)]
    assert len(meta[0]) == len(meta[1])  # per dataset, not per file: 2 vs 16 images
    trial = load(cfg(large, input_size=8), {driver[large].root: driver[large].fingerprint})
    assert not trial.hashed and len(trial.images) == 16
    for name in ARRAY_NAMES:  # file names and cases too: mapped, not parsed into Python objects
        assert isinstance(getattr(trial, name), np.memmap), name
    assert trial.paths(np.array([15]))[0] == f"{large}/Alpha/image/A01-1-400-007.png"
    assert trial.case_names[15] == "A01"


def test_a_given_fingerprint_without_its_entry_falls_back_to_hashing(make_png_dataset, cfg):
    root = make_png_dataset("ebhi", {"Alpha": 2}, per_case=2, size=40)
    driver = load(cfg(root, input_size=16))
    # another size (or another node's empty cache): no entry under that fingerprint yet
    trial = load(cfg(root, input_size=24), {driver.root: driver.fingerprint})
    assert trial.hashed and not trial.cache_hit and trial.images.shape[1] == 24
    assert trial.fingerprint == driver.fingerprint
    # a changed file changes what the driver hands its trials, and so the entry
    label = root / "Alpha" / "label" / "A00-1-400-000.png"
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(label)
    changed = load(cfg(root, input_size=16))
    assert changed.fingerprint != driver.fingerprint and changed.cache_path != driver.cache_path
