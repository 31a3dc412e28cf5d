"""`python -m tunelab.predict`: an arm's models on new images, end to end on a tiny sweep."""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from tunelab.config import TrialConfig
from tunelab.model import UNet
from tunelab.predict.__main__ import main as predict_main
from tunelab.results import RESULTS_FILE

pytestmark = pytest.mark.e2e
SIZES = [(50, 40), (47, 61), (64, 64)]  # (width, height), none the training size (32)


# cannot learn (lr 1e-9, one epoch) and calls a pixel foreground only at a probability of 0.99,
# which an untrained model never gives: it finds no foreground, IoU 0. First, so that it is the
# baseline (the first arm by default): a default that took the baseline or the first arm would
# pick it.
BLIND = {"train.lr": 1e-9, "train.max_epochs": 1, "eval.thresholds": (0.99,)}


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory, tiny_trial) -> Iterator[Path]:
    """A finished sweep of two arms ('blind', then 'a') x 2 seeds, each trial's model logged
    to MLflow (--log-model), and its cache folder."""
    from tunelab.sweep import main

    root = tmp_path_factory.mktemp("predict")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNELAB_CACHE", str(root / "cache"))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        space = root / "tiny.py"
        arms = {"blind": BLIND, "a": {}}
        space.write_text(f"BASE = {tiny_trial!r}\nARMS = {arms!r}\nSEEDS = [0, 1]\n")
        storage = ["--storage", str(root / "runs"), "--num-cpus", "2", "--quiet"]
        assert main([str(space), *storage, "--log-model"]) == 0
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


def trial_ids(sweep: Path, arm: str = "a") -> list[str]:
    results = pd.read_parquet(sweep / "runs" / "tiny" / RESULTS_FILE)
    return sorted(results.loc[results["arm"] == arm, "trial_id"].unique())


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


def test_labels_are_scored_against_the_written_masks(tiny_sweep, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(tiny_sweep, images[0], out, "--labels", str(images[1])) == 0
    scores = pd.read_csv(out / "scores.csv").set_index("image")
    assert len(scores) == 3 and (scores["note"].fillna("") == "").all()
    ious = []
    for name, row in scores.iterrows():
        # the expected scores, counted here with NumPy from the mask the CLI wrote and the label
        mask = np.asarray(Image.open(out / name.replace(".png", "_mask.png"))) > 0
        label = np.asarray(Image.open(images[1] / name).convert("L")) > 127
        tp, fp = (mask & label).sum(), (mask & ~label).sum()
        fn, tn = (~mask & label).sum(), (~mask & ~label).sum()
        expected = {
            "iou": tp / (tp + fp + fn),
            "dice": 2 * tp / (2 * tp + fp + fn),
            "pixel_error": (fp + fn) / mask.size,
            "accuracy": (tp + tn) / mask.size,
        }
        for metric, value in expected.items():
            assert row[metric] == pytest.approx(value, abs=1e-6), (name, metric)
        assert row["hd95"] >= 0 and 0 <= row["nsd"] <= 1  # boundary metrics: MONAI's own tests
        ious.append(expected["iou"])
    summary = pd.read_csv(out / "scores_summary.csv", index_col=0)
    assert summary.loc["iou", "mean"] == pytest.approx(np.mean(ious))
    assert summary.loc["iou", "std"] == pytest.approx(np.std(ious, ddof=1))
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
    error = capsys.readouterr().err
    assert "--arm 'b': not an arm of this sweep; arms with models: [" in error
    assert sorted(ast.literal_eval(error[error.index("[") :].strip())) == ["a", "blind"]
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
    assert len(trials) == 4
    for trial in trials:  # the fields of the best arm's trials, in their runs only
        logged = {a.path for a in client.list_artifacts(trial.info.run_id, "receptive_field")}
        expected = {"receptive_field/receptive_field.csv", "receptive_field/receptive_field.png"}
        assert logged == (expected if trial.data.tags["tunelab.arm"] == "a" else set())
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


def test_without_arm_the_best_arm_predicts(tiny_sweep, images, tmp_path, capsys):
    primary = pd.read_parquet(tiny_sweep / "runs" / "tiny" / RESULTS_FILE).query("primary")
    means = primary.groupby("arm")["test_iou"].mean()
    assert means["blind"] == 0 and means["a"] > 0  # the sweep is as designed: 'a' is the best
    assert run(tiny_sweep, images[0], tmp_path / "best") == 0
    assert "2 model(s) of 'a'" in capsys.readouterr().out
    assert run(tiny_sweep, images[0], tmp_path / "blind", "--arm", "blind") == 0
    assert "2 model(s) of 'blind'" in capsys.readouterr().out
    for written in (tmp_path / "blind").glob("*_mask.png"):  # --arm chose the blind models
        assert not np.asarray(Image.open(written)).any()


def test_log_model_logs_each_trial_s_tested_weights(tiny_sweep, tiny_trial, monkeypatch):
    import mlflow
    import mlflow.pytorch

    uri = f"sqlite:///{tiny_sweep / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny").experiment_id
    trial_of_run = {
        run.info.run_id: run.data.tags["tunelab.trial_id"]
        for run in client.search_runs([experiment])
        if run.data.tags.get("tunelab.role") == "trial"
    }
    models = mlflow.search_logged_models(experiment_ids=[experiment], output_format="list")
    assert sorted(trial_of_run[m.source_run_id] for m in models) == sorted(trial_of_run.values())
    results = pd.read_parquet(tiny_sweep / "runs" / "tiny" / RESULTS_FILE).query("primary")
    tested_epoch = results.set_index("trial_id")["checkpoint_epoch"]
    cfg = TrialConfig.from_dict(tiny_trial)  # the arms differ in lr and thresholds only
    images = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    outputs = {}
    for model in models:
        trial = trial_of_run[model.source_run_id]
        (folder,) = (tiny_sweep / "runs" / "tiny").glob(f"*_{trial}")
        state = torch.load(
            sorted(folder.glob("checkpoint_*"))[-1] / "trainer.pt", weights_only=True
        )
        # eval.checkpoint = best: the test set scored the best-validation epoch's weights
        assert state["best"]["epoch"] == tested_epoch[trial]
        tested = UNet(cfg.model, cfg.data.channels, cfg.out_channels)
        tested.load_state_dict(state["best"]["weights"])
        loaded = mlflow.pytorch.load_model(model.model_uri)
        with torch.no_grad():
            outputs[trial] = loaded(images)
            assert torch.allclose(outputs[trial], tested.eval()(images), atol=1e-5), trial
    first, second = (outputs[trial] for trial in trial_ids(tiny_sweep))
    assert not torch.allclose(first, second)  # each run holds its own trial's model
    # stated requirements (not inferred): what the exported graph needs to load elsewhere
    requirements = Path(mlflow.pyfunc.get_model_dependencies(models[0].model_uri)).read_text()
    assert f"torch=={torch.__version__.split('+')[0]}" in requirements.split()
