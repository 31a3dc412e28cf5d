"""analysis: the report of a sweep folder or MLflow experiment, its formats, and bad input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis import (
    AnalysisError,
    build_report,
    format_latex,
    format_markdown,
    load_sweep,
    main_table,
    paired_comparison,
)
from analysis.__main__ import main as analysis_main
from tunelab.results import IDENTITY_FILE, PREVIEWS_FOLDER, RESULTS_FILE
from tunelab.summary import on_split
from tunelab.tracking.layout import TAG_ROLE, TAG_SWEEP_ID

GOLDEN = Path(__file__).parent / "data" / "golden_results.csv"


def golden_frame() -> pd.DataFrame:
    return pd.read_csv(GOLDEN, dtype={"threshold": str, "error": str})


def write_sweep_folder(folder: Path, identity: dict[str, str] | None = None) -> Path:
    """A sweep folder as the sweep writes it: results, epochs, one preview, tunelab.json."""
    folder.mkdir(parents=True, exist_ok=True)
    results = golden_frame()
    results.to_parquet(folder / RESULTS_FILE, index=False)
    epochs = [
        {"arm": arm, "seed": seed, "epoch": epoch, "val_loss": 1 / epoch, "trend": -0.1 / epoch}
        for arm in ("baseline", "dropout")
        for seed in (0, 1)
        for epoch in range(1, 6)
    ]
    pd.DataFrame(epochs).to_parquet(folder / "epochs.parquet", index=False)
    previews = folder / PREVIEWS_FOLDER
    previews.mkdir()
    rng = np.random.default_rng(0)
    np.savez(
        previews / "dropout_s0.npz",
        images=rng.integers(0, 255, (2, 16, 16, 1), dtype=np.uint8),
        masks=rng.integers(0, 2, (2, 16, 16), dtype=np.uint8),
        predictions=rng.integers(0, 2, (2, 16, 16), dtype=np.uint8),
        classes=np.array(["Normal", "Polyp"]),
    )
    (folder / IDENTITY_FILE).write_text(json.dumps(identity or {"baseline": "baseline"}))
    return folder


def test_report_writes_every_table_and_figure(tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep_folder(tmp_path / "sweep"))
    report = build_report(sweep)
    out = tmp_path / "sweep" / "analysis"
    names = {path.name for path in report.files}
    for stem in ("main", "comparison", "thresholds", "classes_baseline", "classes_augmentation"):
        assert {f"{stem}.csv", f"{stem}.tex"} <= names
    assert {"metrics.png", "learning_curves.png", "predictions_dropout.png", "report.md"} <= names
    assert all(path.parent == out and path.stat().st_size > 0 for path in report.files)
    assert pd.read_csv(out / "main.csv")["n"].tolist() == [3, 3, 3, 2, 0]
    # the best arm by mean IoU gets the threshold table; unscored trials are listed with why
    assert "## dropout by decision threshold" in report.markdown
    assert "- bce_logits, seed 0: failed (ValueError: boom)" in report.markdown
    assert "- augmentation, seed 1: pruned" in report.markdown
    assert (out / "report.md").read_text() == report.markdown


def test_baseline_comes_from_the_sweep_and_is_listed_first(tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep_folder(tmp_path / "s", identity={"baseline": "augmentation"}))
    report = build_report(sweep, tmp_path / "out")
    assert list(report.main["arm"][1:]) == ["augmentation", "baseline", "dropout", "bce_logits"]
    assert "augmentation" not in set(report.comparison["arm"])
    assert "Each arm minus augmentation" in report.markdown


def test_unknown_arm_is_refused_with_the_arms_listed(tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep_folder(tmp_path / "s"))
    with pytest.raises(AnalysisError, match=r"--baseline 'nope' is not an arm.*'dropout'"):
        build_report(sweep, tmp_path / "out", baseline="nope")


def test_multiclass_table_has_accuracy() -> None:
    results = golden_frame()
    results = results[results["primary"]].assign(threshold="argmax")
    results = results.drop(columns=[c for c in results if c.startswith("foreground_")])
    table = main_table(results)
    assert "accuracy_mean" in table
    assert "| Accuracy |" in format_markdown(table)
    assert table["arm"].tolist() == ["baseline", "dropout", "augmentation", "bce_logits"]


def test_trials_not_in_the_means_are_shown_with_their_last_score_and_epoch() -> None:
    table = main_table(golden_frame()).set_index("arm")
    # the golden table's pruned seed reported IoU 0.600 at its last epoch (20)
    assert table.loc["augmentation", "unscored"] == "pruned 0.6000 @ epoch 20"
    assert table.loc["augmentation", "iou_mean"] == pytest.approx((0.790 + 0.805) / 2)
    assert table.loc["bce_logits", "unscored"].split("; ") == [
        "failed @ epoch 20",
        "diverged @ epoch 20",
        "failed @ epoch 20",
    ]
    assert table.loc["baseline", "unscored"] == ""
    tested = golden_frame().assign(test_iou=0.5, test_dice=0.6, test_pixel_error=0.1)
    on_test = main_table(on_split(tested, "test")).set_index("arm")
    assert on_test.loc["augmentation", "unscored"] == "pruned 0.6000 @ epoch 20"  # validation's


def test_latex_is_booktabs_with_escaped_symbols() -> None:
    latex = format_latex(main_table(golden_frame()), caption="Table 1 of study_A")
    assert r"\toprule" in latex and r"\bottomrule" in latex
    assert r"0.8100 $\pm$ 0.0100" in latex
    assert r"\caption{Table 1 of study\_A}" in latex
    assert "±" not in latex
    header = next(line for line in latex.splitlines() if line.startswith("Arm"))
    # arm, IoU, Dice, pixel error, time, n, trials, and the trials not in the means
    assert header.count("&") == 7


def test_paired_comparison_edge_cases() -> None:
    one = paired_comparison({0: 0.8}, {0: 0.7, 1: 0.6})
    assert one.n == 1 and one.mean_diff == pytest.approx(0.1) and math.isnan(one.p_value)
    assert one.note == "one shared seed: no spread"
    same = paired_comparison({0: 0.8, 1: 0.9}, {0: 0.7, 1: 0.8})
    assert same.p_value == 0.0 and same.ci_low == same.ci_high == pytest.approx(0.1)
    assert same.note == "differences identical on every seed"
    skipped = paired_comparison({0: 0.8, 1: math.nan, 2: 0.7}, {0: 0.7, 1: 0.8, 2: 0.65})
    assert skipped.n == 2  # an unscored seed is not a pair


def test_cli_rejects_a_folder_without_results(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert analysis_main([str(tmp_path / "empty"), "--no-mlflow"]) == 2
    err = capsys.readouterr().err
    assert "no results.parquet" in err and str(tmp_path / "empty") in err


def test_cli_split_test_without_test_scores_says_so(tmp_path: Path, capsys) -> None:
    folder = write_sweep_folder(tmp_path / "sweep")  # the golden results have no test set
    assert analysis_main([str(folder), "--split", "test", "--no-mlflow"]) == 2
    assert "no trial of this sweep scored a test set" in capsys.readouterr().err
    assert analysis_main([str(folder), "--no-mlflow"]) == 0  # validation, and it says so
    assert "Scores: Validation split" in capsys.readouterr().out


def test_cli_exits_1_when_mlflow_does_not_take_the_report(
    tmp_path: Path, closed_port, capsys, monkeypatch
):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's retries take minutes
    folder = write_sweep_folder(tmp_path / "sweep", {"experiment": "x", "sweep_id": "abc"})
    uri = f"http://127.0.0.1:{closed_port}"
    assert analysis_main([str(folder), "--mlflow-uri", uri]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: the report is in {folder / 'analysis'}, but MLflow ({uri})")
    assert (folder / "analysis" / "report.md").is_file()  # what was written stays


def test_cli_neither_folder_nor_store_creates_nothing(tmp_path: Path, capsys) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert analysis_main(["runs/typo", "--mlflow-uri", uri]) == 2
    assert "'runs/typo' is not a sweep folder" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


def test_cli_names_a_missing_experiment(tmp_path: Path, capsys) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("other")
    assert analysis_main(["no_such_sweep", "--mlflow-uri", uri, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no MLflow experiment 'no_such_sweep'" in err and "other" in err


def log_sweep_run(
    client: MlflowClient, experiment: str, folder: Path, sweep_id: str, start_time: int
) -> str:
    """A finished sweep's parent run as the sweep logs it: the whole sweep folder."""
    tags = {TAG_ROLE: "sweep", TAG_SWEEP_ID: sweep_id}
    run = client.create_run(experiment, start_time=start_time, tags=tags).info.run_id
    for path in folder.iterdir():
        if path.is_dir():
            client.log_artifacts(run, str(path), artifact_path=path.name)
        else:
            client.log_artifact(run, str(path))
    client.set_terminated(run, "FINISHED")
    shutil.rmtree(folder)  # only MLflow has the sweep now
    return run


def test_cli_reads_an_experiment_and_logs_the_report_to_its_sweep_run(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    folder = write_sweep_folder(tmp_path / "logged")
    client = MlflowClient(uri)
    experiment = client.create_experiment("golden", artifact_location=str(tmp_path / "artifacts"))
    run = log_sweep_run(client, experiment, folder, "abc123", start_time=1_000)

    out = tmp_path / "report"
    assert analysis_main(["golden", "--mlflow-uri", uri, "--out", str(out)]) == 0
    assert (out / "main.csv").is_file() and (out / "predictions_dropout.png").is_file()
    logged = {item.path for item in client.list_artifacts(run, "analysis")}
    assert {"analysis/main.csv", "analysis/comparison.tex", "analysis/metrics.png"} <= logged


def test_cli_refuses_an_unfinished_sweep_run(tmp_path: Path, capsys) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("running")
    client.create_run(experiment, tags={TAG_ROLE: "sweep", TAG_SWEEP_ID: "x"})
    assert analysis_main(["running", "--mlflow-uri", uri, "--out", str(tmp_path / "o")]) == 2
    assert "did not finish (status RUNNING); resume it first" in capsys.readouterr().err


@pytest.mark.e2e
def test_sweep_then_analysis_from_its_folder_and_from_mlflow(env, write_space, sweep, capsys):
    # one seed on two cross-validation folds: 2 replicates per arm, paired by (seed, fold)
    space = write_space(
        "ARMS = {'baseline': {}, 'dropout': {'model.dropout': 0.2}}\n"
        "BASELINE = 'dropout'\nSEEDS = [0]\nFOLDS = 2\n"
    )
    assert sweep(space) == 0
    folder = env / "runs" / "tiny"
    assert json.loads((folder / IDENTITY_FILE).read_text())["baseline"] == "dropout"
    results = pd.read_parquet(folder / RESULTS_FILE)
    primary = results[results["primary"]]
    assert sorted(zip(primary["arm"], primary["fold"], strict=True)) == [
        ("baseline", 0),
        ("baseline", 1),
        ("dropout", 0),
        ("dropout", 1),
    ]
    assert set(primary["data.folds"]) == {2} and set(primary["seed"]) == {0}
    # the folds split the non-test data differently (their all-foreground scores differ) and
    # share the test set
    assert primary.groupby("fold")["foreground_iou_all"].first().nunique() == 2
    assert primary["test_foreground_iou_all"].nunique() == 1
    assert analysis_main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert "Each arm minus dropout" in out and "| baseline | IoU | 2 |" in out
    assert (folder / "analysis" / "predictions_baseline.png").is_file()
    # the tables score the test set by default, the validation split when asked
    assert "Scores: Test set (held-out cases, data.test_seed = 0)" in out
    baseline = primary[primary["arm"] == "baseline"]
    tested = pd.read_csv(folder / "analysis" / "main.csv").set_index("arm")
    assert tested.loc["baseline", "iou_mean"] == pytest.approx(baseline["test_iou"].mean())
    validation = ["--split", "validation", "--out", str(env / "validation"), "--no-mlflow"]
    assert analysis_main([str(folder), *validation]) == 0
    assert "optimistic" in capsys.readouterr().out
    validated = pd.read_csv(env / "validation" / "main.csv").set_index("arm")
    assert validated.loc["baseline", "iou_mean"] == pytest.approx(baseline["iou"].mean())

    assert analysis_main(["tiny", "--out", str(env / "from_mlflow")]) == 0
    from_mlflow = pd.read_csv(env / "from_mlflow" / "main.csv")
    pd.testing.assert_frame_equal(from_mlflow, pd.read_csv(folder / "analysis" / "main.csv"))
    assert (env / "from_mlflow" / "predictions_dropout.png").is_file()


def test_cli_sweep_id_picks_an_older_sweep_of_the_experiment(tmp_path: Path, capsys) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("golden", artifact_location=str(tmp_path / "artifacts"))
    older = write_sweep_folder(tmp_path / "older", identity={"baseline": "augmentation"})
    log_sweep_run(client, experiment, older, "old111", start_time=1_000)
    newer = write_sweep_folder(tmp_path / "newer", identity={"baseline": "baseline"})
    log_sweep_run(client, experiment, newer, "new222", start_time=2_000)
    common = ["golden", "--mlflow-uri", uri, "--no-mlflow"]
    assert analysis_main([*common, "--out", str(tmp_path / "a")]) == 0
    assert "Each arm minus baseline" in capsys.readouterr().out  # the newest by default
    assert analysis_main([*common, "--out", str(tmp_path / "b"), "--sweep-id", "old111"]) == 0
    assert "Each arm minus augmentation" in capsys.readouterr().out


def test_cli_baseline_and_arm_choose_the_comparison_and_the_threshold_table(
    tmp_path: Path, capsys
) -> None:
    folder = write_sweep_folder(tmp_path / "s")
    assert analysis_main([str(folder), "--no-mlflow"]) == 0
    default = capsys.readouterr().out
    assert "Each arm minus baseline" in default and "## dropout by decision threshold" in default
    options = ["--baseline", "augmentation", "--arm", "bce_logits"]
    assert analysis_main([str(folder), "--no-mlflow", *options]) == 0
    chosen = capsys.readouterr().out
    assert "Each arm minus augmentation" in chosen and "Each arm minus baseline" not in chosen
    assert "## bce_logits by decision threshold" in chosen and "## dropout by" not in chosen
    comparison = pd.read_csv(folder / "analysis" / "comparison.csv")
    assert "augmentation" not in set(comparison["arm"]) and "baseline" in set(comparison["arm"])
