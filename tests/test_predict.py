"""`python -m tunelab.predict`: an arm's models on new images, end to end on a tiny sweep."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from tunelab import metrics
from tunelab.metric_names import IMAGE_METRICS
from tunelab.predict.__main__ import main as predict_main
from tunelab.predict.ensemble import as_logits
from tunelab.results import RESULTS_FILE

pytestmark = pytest.mark.e2e
SIZES = [(50, 40), (47, 61), (64, 64)]  # (width, height), none the training size (32)


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory, tiny_trial) -> Iterator[Path]:
    """A finished sweep of one arm x 2 seeds, and its cache folder."""
    from tunelab.sweep import main

    root = tmp_path_factory.mktemp("predict")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNELAB_CACHE", str(root / "cache"))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        space = root / "tiny.py"
        space.write_text(f"BASE = {tiny_trial!r}\nARMS = {{'a': {{}}}}\nSEEDS = [0, 1]\n")
        storage = ["--storage", str(root / "runs"), "--num-cpus", "2", "--quiet"]
        assert main([str(space), *storage]) == 0
        yield root


@pytest.fixture
def images(tiny_sweep: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(images, labels): 3 synthetic images and their labels, resized to other sizes."""
    pngs = sorted((tiny_sweep / "cache").glob("synthetic-*/*/image/*.png"))[:3]
    folder, labels = tmp_path / "images", tmp_path / "labels"
    folder.mkdir()
    labels.mkdir()
    for png, size in zip(pngs, SIZES, strict=True):
        Image.open(png).resize(size).save(folder / png.name)
        label = png.parent.parent / "label" / png.name
        Image.open(label).resize(size, Image.Resampling.NEAREST).save(labels / png.name)
    return folder, labels


def run(sweep: Path, images: Path, out: Path, *options: str) -> int:
    return predict_main([str(sweep / "runs" / "tiny"), str(images), "--out", str(out), *options])


def trial_ids(sweep: Path) -> list[str]:
    results = pd.read_parquet(sweep / "runs" / "tiny" / RESULTS_FILE)
    return sorted(results["trial_id"].unique())


def test_masks_come_back_at_each_image_s_own_size(tiny_sweep, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(tiny_sweep, images[0], out, "--overlay") == 0
    printed = capsys.readouterr().out
    assert "3 images" in printed and "2 model(s) of 'a'" in printed and "images/s" in printed
    assert "converted 3 RGB image(s) to greyscale" in printed  # a greyscale model (channels 1)
    table = pd.read_csv(out / "predictions.csv")
    assert table["models"].tolist() == [2, 2, 2]
    for row in table.itertuples():
        mask = np.asarray(Image.open(out / row.image.replace(".png", "_mask.png")))
        assert mask.shape == (row.height, row.width)
        assert set(np.unique(mask)) <= {0, 255}
        assert (mask > 0).mean() == pytest.approx(row.foreground_fraction)
        overlay = Image.open(out / row.image.replace(".png", "_overlay.png"))
        assert overlay.size == (row.width, row.height) and overlay.mode == "RGB"
    assert sorted((w, h) for w, h in zip(table.width, table.height, strict=True)) == sorted(SIZES)
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - set(images[0].rglob("*"))
    written -= set(images[1].rglob("*"))
    assert all(out in p.parents for p in written)  # nothing outside OUT_DIR


def test_the_ensemble_averages_its_members_probabilities(tiny_sweep, images, tmp_path):
    assert run(tiny_sweep, images[0], tmp_path / "both", "--probabilities") == 0
    singles = []
    for trial in trial_ids(tiny_sweep):
        out = tmp_path / trial
        assert run(tiny_sweep, images[0], out, "--probabilities", "--single", trial) == 0
        singles.append(out)
    for path in sorted((tmp_path / "both").glob("*.npy")):
        members = [np.load(folder / path.name) for folder in singles]
        assert not np.allclose(members[0], members[1])  # two different models
        np.testing.assert_allclose(np.load(path), np.mean(members, axis=0), atol=1e-5)


def test_labels_are_scored_with_tunelab_metrics(tiny_sweep, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(tiny_sweep, images[0], out, "--probabilities", "--labels", str(images[1])) == 0
    scores = pd.read_csv(out / "scores.csv").set_index("image")
    assert len(scores) == 3 and (scores["note"].fillna("") == "").all()
    for name, row in scores.iterrows():
        probs = np.load(out / name.replace(".png", "_probabilities.npy"))[None]
        label = np.asarray(Image.open(images[1] / name).convert("L")) > 127
        by_class, _ = metrics.image_scores(
            as_logits(probs), torch.from_numpy(label).long()[None], (0.5,), False, 2.0
        )
        for metric in IMAGE_METRICS:
            assert row[metric] == pytest.approx(float(by_class[metric][0]), abs=1e-6), metric
    summary = pd.read_csv(out / "scores_summary.csv", index_col=0)
    assert summary.loc["iou", "mean"] == pytest.approx(scores["iou"].mean())
    assert "scored 3 image(s)" in capsys.readouterr().out


def test_an_unreadable_image_is_reported_and_skipped(tiny_sweep, images, tmp_path, capsys):
    (images[0] / "broken.png").write_bytes(b"not a png")
    assert run(tiny_sweep, images[0], tmp_path / "out") == 0
    printed = capsys.readouterr().out
    assert "skipped" in printed and "broken.png: unreadable" in printed
    assert len(pd.read_csv(tmp_path / "out" / "predictions.csv")) == 3


def test_deleted_checkpoints_and_unknown_arms_are_errors_naming_why(
    tiny_sweep, images, tmp_path, capsys
):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_sweep / "runs", copy / "runs")
    assert run(copy, images[0], tmp_path / "o1", "--arm", "b") == 2
    assert "--arm 'b': not an arm of this sweep; arms with models: ['a']" in capsys.readouterr().err
    first = trial_ids(copy)[0]
    for folder in (copy / "runs" / "tiny").glob(f"*_{first}"):
        for saved in folder.glob("checkpoint_*"):
            shutil.rmtree(saved)
    assert run(copy, images[0], tmp_path / "o2") == 2
    error = capsys.readouterr().err
    assert f"trial {first}" in error and "checkpoints were deleted" in error
    results = pd.read_parquet(copy / "runs" / "tiny" / RESULTS_FILE)
    results.assign(status="pruned").to_parquet(copy / "runs" / "tiny" / RESULTS_FILE)
    assert run(copy, images[0], tmp_path / "o3") == 2  # the best arm of none
    assert "no trial of this sweep completed or converged" in capsys.readouterr().err
    assert run(copy, images[0], tmp_path / "o3", "--arm", "a") == 2
    assert "--arm 'a': no trial of it completed; arms with models: []" in capsys.readouterr().err
    assert run(tiny_sweep, tmp_path / "nowhere", tmp_path / "o4") == 2
    assert "does not exist" in capsys.readouterr().err


def test_an_mlflow_experiment_leads_to_its_sweep_folder(tiny_sweep, images, tmp_path, capsys):
    uri = f"sqlite:///{tiny_sweep / 'mlflow.db'}"
    out = tmp_path / "out"
    assert predict_main(["tiny", str(images[0]), "--out", str(out), "--mlflow-uri", uri]) == 0
    assert len(pd.read_csv(out / "predictions.csv")) == 3
    assert predict_main(["nope", str(images[0]), "--out", str(out), "--mlflow-uri", uri]) == 2
    assert (
        "'nope' is not a sweep folder, and no MLflow experiment 'nope'" in capsys.readouterr().err
    )


def test_receptive_fields_of_an_arm(tiny_sweep, images, tmp_path, capsys):
    out = tmp_path / "fields"
    assert (
        predict_main([str(tiny_sweep / "runs" / "tiny"), "--out", str(out), "--receptive-field"])
        == 0
    )
    table = pd.read_csv(out / "receptive_field.csv").iloc[0]
    assert table["theoretical"] == 44  # 3 levels (tests/test_receptive_field.py works it out)
    assert 0 < table["effective_95 (zero input)"] <= table["non-zero (zero input)"] <= 44
    assert (out / "receptive_field.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "theoretical 44 px" in printed and "logged to the MLflow runs of 2 trial(s)" in printed
    client = MlflowClient(f"sqlite:///{tiny_sweep / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    trials = [r for r in runs if r.data.tags.get("tunelab.role") == "trial"]
    for trial in trials:
        logged = {a.path for a in client.list_artifacts(trial.info.run_id, "receptive_field")}
        assert logged == {
            "receptive_field/receptive_field.csv",
            "receptive_field/receptive_field.png",
        }
    assert (
        predict_main(
            [
                str(tiny_sweep / "runs" / "tiny"),
                str(images[0]),
                "--out",
                str(out),
                "--receptive-field",
            ]
        )
        == 0
    )
    assert "effective_95 (images)" in pd.read_csv(out / "receptive_field.csv")


def test_a_registered_ensemble_gives_the_cli_s_masks(
    tiny_sweep, images, tmp_path, capsys, monkeypatch
):
    import mlflow.pyfunc

    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    out = tmp_path / "out"
    code = run(tiny_sweep, images[0], out, "--register", "tiny-a", "--mlflow-uri", uri)
    assert code == 0
    assert "registered 'tiny-a' version 1" in capsys.readouterr().out
    # the CLI left MLflow's global store alone: this process's own setting still decides
    assert mlflow.get_tracking_uri() != uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pyfunc.load_model("models:/tiny-a/1")
    assert model.metadata.signature is not None
    for path in sorted(images[0].glob("*.png")):
        pixels = np.asarray(Image.open(path).convert("L"))[None, :, :, None]
        probabilities = model.predict(pixels)
        assert probabilities.shape == (1, 1, *pixels.shape[1:3])
        mask = (probabilities[0, 0] >= 0.5).astype(np.uint8) * 255
        expected = np.asarray(Image.open(out / path.name.replace(".png", "_mask.png")))
        np.testing.assert_array_equal(mask, expected)


def test_device_is_chosen_or_refused_clearly(tiny_sweep, images, tmp_path, capsys):
    assert run(tiny_sweep, images[0], tmp_path / "cpu", "--device", "cpu") == 0
    if not torch.cuda.is_available():
        assert run(tiny_sweep, images[0], tmp_path / "gpu", "--device", "cuda") == 2
        assert "--device cuda: train.device = 'cuda' but no CUDA device" in capsys.readouterr().err
