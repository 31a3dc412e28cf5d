from pathlib import Path

import pytest

from tunelab.data.scan import case_id, scan


def reasons_by_path(result) -> dict[str, str]:
    return dict(result.skipped)


def test_ebhi_layout_pairs_every_image_with_its_label(make_png_dataset):
    root = make_png_dataset("ebhi", {"Beta": 2, "Alpha": 3}, per_case=2)
    result = scan(root)
    assert result.layout == "ebhi"
    assert len(result.pairs) == 10
    assert [p.class_name for p in result.pairs] == ["Alpha"] * 6 + ["Beta"] * 4  # sorted
    assert all(p.image.name == p.label.name for p in result.pairs)
    assert {p.case for p in result.pairs if p.class_name == "Beta"} == {"B00", "B01"}
    assert result.skipped == ()


def test_generic_flat_layout_is_one_class(make_png_dataset):
    result = scan(make_png_dataset("generic", {"Alpha": 2}))
    assert result.layout == "generic"
    assert {p.class_name for p in result.pairs} == {"all"}
    assert len(result.pairs) == 6


def test_generic_layout_with_class_folders(make_png_dataset):
    root = make_png_dataset("generic-classes", {"Tumour": 1, "Normal": 2}, per_case=1)
    (root / "images" / "stray.png").write_bytes(b"")
    result = scan(root)
    assert result.layout == "generic-classes"
    assert [p.class_name for p in result.pairs] == ["Normal", "Normal", "Tumour"]
    assert reasons_by_path(result)[str(root / "images" / "stray.png")].startswith("file outside")


def test_jpg_and_tif_images_pair_with_png_masks(make_png_dataset):
    root = make_png_dataset("generic", {"Alpha": 1}, per_case=2)
    images = sorted((root / "images").iterdir())
    images[0].rename(images[0].with_suffix(".jpg"))
    images[1].rename(images[1].with_suffix(".TIF"))
    assert {p.image.suffix for p in scan(root).pairs} == {".jpg", ".TIF"}


def test_every_unusable_file_is_reported_with_its_reason(make_png_dataset):
    root = make_png_dataset("ebhi", {"Alpha": 2, "Beta": 1}, per_case=2)
    orphan_image = root / "Alpha" / "image" / "A00-1-400-000.png"
    (root / "Alpha" / "label" / "A00-1-400-000.png").unlink()
    orphan_label = root / "Beta" / "label" / "B00-1-400-001.png"
    (root / "Beta" / "image" / "B00-1-400-001.png").unlink()
    notes = root / "Alpha" / "image" / "notes.txt"
    notes.write_text("not an image")
    (root / "Empty" / "image").mkdir(parents=True)
    (root / "Empty" / "label").mkdir()
    (root / "Hollow").mkdir()
    (root / "docs").mkdir()
    (root / "docs" / "README.md").write_text("about the data")
    result = scan(root)
    reasons = reasons_by_path(result)
    assert reasons[str(orphan_image)].startswith("image without label")
    assert reasons[str(orphan_label)].startswith("label without image")
    assert reasons[str(notes)].startswith("not a usable image file")
    assert "empty class folder 'Empty'" in reasons[str(root / "Empty" / "image")]
    assert reasons[str(root / "Hollow")] == "empty class folder 'Hollow'"
    assert reasons[str(root / "docs")].startswith("not a class folder")
    assert len(result.pairs) == 4
    assert "Empty" not in {p.class_name for p in result.pairs}


def test_folder_of_neither_layout_names_path_and_both_layouts(tmp_path: Path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(ValueError, match="no dataset found") as error:
        scan(tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message
    assert "<class>/image" in message and "images/ + masks/" in message


def test_missing_folder_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ValueError, match="does not exist"):
        scan(tmp_path / "nowhere")


def test_folder_without_any_pair_names_the_folder(make_png_dataset):
    root = make_png_dataset("generic", {"Alpha": 1}, per_case=2)
    for mask in (root / "masks").iterdir():
        mask.unlink()
    with pytest.raises(ValueError, match="no usable image/label pair") as error:
        scan(root)
    assert str(root) in str(error.value)


def test_paths_with_spaces(make_png_dataset):
    root = make_png_dataset("ebhi", {"Low grade IN": 2}, name="my data set")
    result = scan(root)
    assert len(result.pairs) == 6
    assert {p.class_name for p in result.pairs} == {"Low grade IN"}


@pytest.mark.parametrize(
    ("stem", "case"),
    [
        ("GT2000000-1-400-001", "GT2000000"),
        ("GTxc2012888-1-400-011", "GTXC2012888"),  # case spellings of one prefix agree
        ("GTXC2012888-2-400-001", "GTXC2012888"),
        ("GTGT2012149-2-400-001", "GT2012149"),  # EBHI's doubled prefix
        ("slide7", "SLIDE7"),  # no '-': the image is its own case
    ],
)
def test_case_id(stem: str, case: str):
    assert case_id(stem) == case
