import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tunelab.data import synthetic
from tunelab.data.synthetic import CLASS_NAMES, class_counts, ensure_synthetic, generate

N = 60
NAME = re.compile(r"SYN(\d{5})-1-400-(\d{3})\.png")


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("binary"), N, seed=0)


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("multiclass"), N, seed=0, task="multiclass")


def labels(root: Path) -> dict[str, list[np.ndarray]]:
    return {
        c: [np.array(Image.open(p)) for p in sorted((root / c / "label").iterdir())]
        for c in CLASS_NAMES
    }


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_class_counts_follow_ebhi_imbalance():
    counts = dict(zip(CLASS_NAMES, class_counts(600), strict=True))
    assert sum(counts.values()) == 600
    ranked = sorted(counts, key=counts.get, reverse=True)
    assert ranked == [
        "Adenocarcinoma",
        "Low-grade IN",
        "Polyp",
        "High-grade IN",
        "Normal",
        "Serrated adenoma",
    ]
    assert counts["Adenocarcinoma"] == 205  # 438 / 1285 of 600, rounded
    small = class_counts(12)
    assert small == [2] * 6


def test_too_few_images_or_unknown_task_rejected(tmp_path):
    with pytest.raises(ValueError, match="2 per class"):
        generate(tmp_path, 11)
    with pytest.raises(ValueError, match="multiclass"):
        generate(tmp_path, 12, task="segmentation")  # type: ignore[arg-type]


def test_layout_and_counts_match_ebhi(binary):
    assert sorted(p.name for p in binary.iterdir()) == sorted(CLASS_NAMES)
    for name, count in zip(CLASS_NAMES, class_counts(N), strict=True):
        images = sorted(p.name for p in (binary / name / "image").iterdir())
        assert images == sorted(p.name for p in (binary / name / "label").iterdir())
        assert len(images) == count >= 2
        image = Image.open(binary / name / "image" / images[0])
        label = Image.open(binary / name / "label" / images[0])
        assert (image.mode, image.size, label.mode, label.size) == (
            "RGB",
            (128, 128),
            "L",
            (128, 128),
        )


def test_same_seed_same_bytes_other_seed_differs(binary, tmp_path):
    again = generate(tmp_path / "again", N, seed=0)
    assert file_bytes(again) == file_bytes(binary)
    other = file_bytes(generate(tmp_path / "other", N, seed=1))
    reference = file_bytes(binary)
    shared = other.keys() & reference.keys()
    assert shared and all(other[k] != reference[k] for k in shared)


def test_binary_labels_and_foreground_fraction(binary):
    masks = [m for ms in labels(binary).values() for m in ms]
    assert set(np.unique(np.stack(masks))) == {0, 255}
    fractions = np.array([(m == 255).mean() for m in masks])
    assert 0.5 <= fractions.mean() <= 0.7
    assert fractions.std() > 0.03  # varies per image, as in EBHI


def test_multiclass_labels(binary, multiclass):
    per_class = labels(multiclass)
    values = np.unique(np.concatenate([m.ravel() for ms in per_class.values() for m in ms]))
    assert values.tolist() == [0, 1, 2]
    assert all((m != 2).all() for m in per_class["Normal"])  # normal glands are tissue
    # the task changes only the labels: same images, tumour = the binary foreground
    assert file_bytes(multiclass / "Polyp" / "image") == file_bytes(binary / "Polyp" / "image")
    polyp_binary = labels(binary)["Polyp"]
    assert all(
        ((m == 2) == (b == 255)).all()
        for m, b in zip(per_class["Polyp"], polyp_binary, strict=True)
    )


def test_names_group_images_into_single_class_cases(binary):
    cases: dict[int, set[str]] = defaultdict(set)
    numbers: dict[int, list[int]] = defaultdict(list)
    for path in binary.glob("*/image/*.png"):
        match = NAME.fullmatch(path.name)
        assert match, path.name
        cases[int(match[1])].add(path.parent.parent.name)
        numbers[int(match[1])].append(int(match[2]))
    assert all(len(classes) == 1 for classes in cases.values())
    assert all(sorted(ks) == list(range(1, len(ks) + 1)) for ks in numbers.values())
    sizes = [len(ks) for ks in numbers.values()]
    assert max(sizes) <= 8 and np.mean(sizes) >= 2


def test_images_of_a_case_look_alike(binary):
    # grouped splits matter only if a case's images are near-duplicates in stain
    colours: dict[str, list[np.ndarray]] = defaultdict(list)
    for path in binary.glob("*/image/*.png"):
        colours[path.name[:8]].append(np.array(Image.open(path)).reshape(-1, 3).mean(0))
    groups = [np.stack(c) for c in colours.values() if len(c) > 1]
    within = np.mean([g.std(0).mean() for g in groups])
    between = np.stack([g.mean(0) for g in groups]).std(0).mean()
    assert within < 0.7 * between


def test_ensure_synthetic_generates_once(tmp_path, monkeypatch):
    calls = []

    def counting(*args, **kwargs):
        calls.append(args)
        return generate(*args, **kwargs)

    monkeypatch.setattr(synthetic, "generate", counting)
    first = ensure_synthetic(tmp_path, 12, seed=3, size=32)
    second = ensure_synthetic(tmp_path, 12, seed=3, size=32)
    assert first == second == tmp_path / f"synthetic-binary-12-32-s3-v{synthetic.VERSION}"
    assert len(calls) == 1
    assert list(tmp_path.iterdir()) == [first]  # no temporary directory left behind
    assert len(list(first.glob("*/image/*.png"))) == 12


def test_ensure_synthetic_loser_of_a_race_uses_the_winner(tmp_path, monkeypatch):
    final = tmp_path / f"synthetic-multiclass-12-32-s0-v{synthetic.VERSION}"

    def racing(root, *args, **kwargs):
        generate(final, *args, **kwargs)  # another process finishes first
        (final / "winner").touch()
        return generate(root, *args, **kwargs)

    monkeypatch.setattr(synthetic, "generate", racing)
    assert ensure_synthetic(tmp_path, 12, size=32, task="multiclass") == final
    assert (final / "winner").exists()
    assert list(tmp_path.iterdir()) == [final]
