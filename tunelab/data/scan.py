"""Find the image/label pairs of a dataset folder, and everything in it that cannot be used.

Two layouts are understood:
  ebhi:    <root>/<class>/image/<name>.png  +  <root>/<class>/label/<name>.png
  generic: <root>/images/[<class>/]<name>.{png,jpg,tif}  +  <root>/masks/[<class>/]<name>.png
           (without class sub-folders every pair belongs to one class, "all")

Nothing is decoded here: corrupt files and size mismatches surface when `cache` decodes each pair
once, so a scan costs one directory listing per folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
LABEL_SUFFIXES = (".png",)
FLAT_CLASS = "all"  # the one class of a generic layout without class sub-folders
Skipped = list[tuple[str, str]]  # (path, reason)


@dataclass(frozen=True)
class Pair:
    image: Path
    label: Path
    class_name: str
    case: str  # patient/case id: images of one case must not straddle the split


@dataclass(frozen=True)
class ScanResult:
    root: Path
    layout: str  # "ebhi", "generic" or "generic-classes"
    pairs: tuple[Pair, ...]  # sorted by (class, image name)
    skipped: tuple[tuple[str, str], ...]  # (path, reason): everything left out, and why


def case_id(stem: str) -> str:
    """The case of an image from its file name: the prefix before the first '-'.

    EBHI spells one prefix in several cases (GTxc2012888, GTXC2015335), so ids are upper-cased.
    One EBHI file doubles its prefix (GTGT2012149-...); it is read as the case GT2012149.
    A name without '-' is its own case.
    """
    case = stem.split("-", 1)[0].upper()
    return case[2:] if case.startswith("GTGT") else case


def scan(root: Path) -> ScanResult:
    """Detect the layout of `root` and pair every image with its label by file stem."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"dataset folder {root} does not exist or is not a folder")
    if (root / "images").is_dir() and (root / "masks").is_dir():
        layout, folders, skipped = _generic_folders(root)
    else:
        layout, folders, skipped = _ebhi_folders(root)
    if not folders:
        raise ValueError(
            f"no dataset found in {root}: expected either the EBHI layout "
            "<class>/image/*.png + <class>/label/*.png, or images/ + masks/ "
            "(flat, or with one sub-folder per class)"
        )
    pairs: list[Pair] = []
    for class_name, image_dir, label_dir in sorted(folders):
        found, problems = _pair_folder(class_name, image_dir, label_dir)
        pairs += found
        skipped += problems
    if not pairs:
        raise ValueError(
            f"no usable image/label pair in {root} ({layout} layout): "
            + "; ".join(f"{path}: {reason}" for path, reason in skipped[:5])
        )
    return ScanResult(root, layout, tuple(pairs), tuple(skipped))


def _entries(folder: Path) -> list[os.DirEntry]:
    """Visible entries of a folder, sorted by name; scandir's type info saves a stat per file."""
    with os.scandir(folder) as entries:
        return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _subfolders(folder: Path) -> list[Path]:
    return [Path(e.path) for e in _entries(folder) if e.is_dir()]


def _ebhi_folders(root: Path) -> tuple[str, list[tuple[str, Path, Path]], Skipped]:
    """("ebhi", [(class, image folder, label folder)], skipped) of a <class>/image + label root."""
    folders, skipped = [], []
    for d in _subfolders(root):
        if (d / "image").is_dir() or (d / "label").is_dir():
            folders.append((d.name, d / "image", d / "label"))
        elif any(d.iterdir()):
            skipped.append((str(d), "not a class folder (no image/ or label/ folder inside)"))
        else:
            skipped.append((str(d), f"empty class folder {d.name!r}"))
    return "ebhi", folders, skipped


def _generic_folders(root: Path) -> tuple[str, list[tuple[str, Path, Path]], Skipped]:
    """(layout, [(class, image folder, label folder)], skipped) of an images/ + masks/ root."""
    images, masks = root / "images", root / "masks"
    classes = sorted({d.name for d in _subfolders(images)} | {d.name for d in _subfolders(masks)})
    if not classes:
        return "generic", [(FLAT_CLASS, images, masks)], []
    # with class sub-folders, a file lying directly in images/ or masks/ belongs to no class
    stray = [
        (e.path, "file outside any class folder")
        for folder in (images, masks)
        for e in _entries(folder)
        if not e.is_dir()
    ]
    return "generic-classes", [(c, images / c, masks / c) for c in classes], stray


def _files(folder: Path, suffixes: tuple[str, ...], kind: str) -> tuple[dict[str, Path], Skipped]:
    """{stem: path} of the usable files of `folder`, and (path, reason) for the others."""
    by_stem: dict[str, Path] = {}
    skipped: Skipped = []
    if not folder.is_dir():
        return by_stem, skipped
    for entry in _entries(folder):  # hidden files (.DS_Store and friends) are left out
        path = Path(entry.path)
        if entry.is_dir():
            skipped.append((str(path), f"unexpected folder inside the {kind} folder"))
        elif path.suffix.lower() not in suffixes:
            expected = ", ".join(suffixes)
            skipped.append((str(path), f"not a usable {kind} file (expected {expected})"))
        elif path.stem in by_stem:
            skipped.append((str(path), f"duplicate {kind} name (also {by_stem[path.stem].name})"))
        else:
            by_stem[path.stem] = path
    return by_stem, skipped


def _pair_folder(class_name: str, image_dir: Path, label_dir: Path) -> tuple[list[Pair], Skipped]:
    """Pairs of one class folder, and every file of it that has no partner."""
    images, skipped = _files(image_dir, IMAGE_SUFFIXES, "image")
    labels, label_skips = _files(label_dir, LABEL_SUFFIXES, "label")
    skipped += label_skips
    if not images and not labels:
        reason = f"empty class folder {class_name!r} (no files in {image_dir} or {label_dir})"
        return [], [*skipped, (str(image_dir), reason)]
    pairs = [
        Pair(images[stem], labels[stem], class_name, case_id(stem))
        for stem in sorted(images)
        if stem in labels
    ]
    skipped += [
        (str(images[s]), f"image without label (no {label_dir / s}.png)")
        for s in sorted(images.keys() - labels.keys())
    ]
    skipped += [
        (str(labels[s]), f"label without image (no {s}.* in {image_dir})")
        for s in sorted(labels.keys() - images.keys())
    ]
    return pairs, skipped
