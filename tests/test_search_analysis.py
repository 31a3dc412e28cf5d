"""analysis.search: a search sweep's importance, configurations and top k, and its part of the
report. Frames are built by hand; expected numbers come from plain numpy, not the code tested."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from test_analysis import golden_frame, write_sweep_folder

from analysis import AnalysisError, build_report, load_sweep
from analysis.search import (
    cast_to_domains,
    cast_value,
    configuration_table,
    distribution,
    importance,
    read_search,
    top_configurations,
    trial_table,
)
from analysis.search_report import report_section
from tunelab.results import RESULTS_FILE

SPACE = {
    "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.5, "log": False},
    "model.base_channels": {"type": "categorical", "choices": [8, 16, 32]},
}
TABLE_FILES = {"search_trials.csv", "search_configurations.csv", "search_top.csv"}
FIGURE_FILES = {"search_importance.csv", "search_importance.png"}
FIGURE_FILES |= {"search_parallel.png", "search_slices.png"}
SEARCH_FILES = TABLE_FILES | FIGURE_FILES


def search_identity(space: dict[str, Any] = SPACE, mode: str = "max") -> dict[str, Any]:
    search = {"method": "tpe", "seed": 0, "metric": "val_iou", "mode": mode, "num_samples": 40}
    return {"baseline": "baseline", "search": {**search, "space": space}}


def search_results(
    score: Callable[[float, float, int], float], configurations: int = 40, seeds: int = 3
) -> pd.DataFrame:
    """Results of a search over SPACE: each configuration's seeds score `score(lr, dropout,
    base_channels)` plus small noise; every trial also has an Otsu row that must be ignored."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(configurations):
        lr, dropout = 10 ** rng.uniform(-4, -2), rng.uniform(0, 0.5)
        channels = int(rng.choice([8, 16, 32]))  # numpy ints in the frame, as parquet gives
        arm = f"lr={lr:.3g},dropout={dropout:.2g},base_channels={channels}"
        for seed in range(seeds):
            iou = score(lr, dropout, channels) + rng.normal(0, 0.003)
            row = {"arm": arm, "seed": seed, "fold": 0, "trial_id": f"t{index}_{seed}"}
            row |= {"status": "completed", "train.lr": lr, "model.dropout": dropout}
            row |= {"model.base_channels": np.int64(channels), "iou": iou, "test_iou": iou - 0.01}
            rows += [{**row, "threshold": "0.5", "primary": True}]
            rows += [{**row, "threshold": "otsu", "primary": False, "iou": rng.uniform()}]
    return pd.DataFrame(rows)


def importance_of(results: pd.DataFrame, seed: int = 0, space: dict[str, Any] = SPACE) -> pd.Series:
    space = read_search(search_identity(space))
    trials, domains, notes = cast_to_domains(trial_table(results, space), space)
    assert notes == []
    shares = importance(configuration_table(trials, domains, space), domains, space, seed)
    return shares.set_index("hyperparameter")["importance"]


@pytest.mark.parametrize(
    ("key", "score"),
    [
        ("train.lr", lambda lr, dropout, channels: 0.8 - 0.05 * (math.log10(lr) + 3) ** 2),
        ("model.dropout", lambda lr, dropout, channels: 0.6 + 0.5 * dropout),
        ("model.base_channels", lambda lr, dropout, channels: {8: 0.6, 16: 0.8, 32: 0.7}[channels]),
    ],
)
def test_importance_ranks_the_only_hyperparameter_that_matters_first(key, score) -> None:
    shares = importance_of(search_results(score))
    assert shares.sum() == pytest.approx(1.0)
    assert shares.index[0] == key
    assert shares[key] > 0.6
    assert shares[key] > 3 * shares.drop(key).max()


LINEAR_SPACE = {
    "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": False},
    "model.dropout": SPACE["model.dropout"],
}


def cell_centres(key: str, levels: int) -> np.ndarray:
    """`levels` values at the centres of equal cells of the key's range in LINEAR_SPACE."""
    low, high = LINEAR_SPACE[key]["low"], LINEAR_SPACE[key]["high"]
    return low + (np.arange(levels) + 0.5) / levels * (high - low)


def grid_results(score: Callable[[Any, Any], Any], levels: int = 8) -> pd.DataFrame:
    """A grid search over LINEAR_SPACE, 2 seeds per configuration with small noise: an even
    sample of the uniform measure over the box that fANOVA's variances are taken over."""
    rng = np.random.default_rng(0)
    rows = []
    for i, lr in enumerate(cell_centres("train.lr", levels)):
        for j, dropout in enumerate(cell_centres("model.dropout", levels)):
            for seed in range(2):
                row = {"arm": f"c{i}_{j}", "seed": seed, "fold": 0, "trial_id": f"t{i}_{j}_{seed}"}
                row |= {"status": "completed", "train.lr": lr, "model.dropout": dropout}
                row |= {"iou": score(lr, dropout) + rng.normal(0, 0.003), "primary": True}
                rows.append(row)
    return pd.DataFrame(rows)


def test_importance_is_each_keys_main_effect_share_and_follows_its_seed() -> None:
    def score(lr, dropout):  # an interaction (42% of the variance) that no main effect holds
        return 0.6 + 20 * lr + 0.3 * dropout + 150 * (lr - 0.00505) * (dropout - 0.25)

    # by hand: a key's main effect is the mean over the other key; its variance over the grid,
    # over the sum of both main effects', is the key's share (0.635 and 0.365); an importance
    # that counts the interaction for both keys (mean decrease in impurity) gives 0.49 and 0.51
    values = score(cell_centres("train.lr", 8)[:, None], cell_centres("model.dropout", 8))
    effects = pd.Series({"train.lr": values.mean(1).var(), "model.dropout": values.mean(0).var()})
    shares = importance_of(grid_results(score), seed=3, space=LINEAR_SPACE)
    # fANOVA fits a random forest to the 64 configurations: off by <= 0.02 for forest seeds 0-4
    pd.testing.assert_series_equal(
        shares, effects / effects.sum(), atol=0.05, check_names=False, check_index_type=False
    )
    assert shares.equals(importance_of(grid_results(score), seed=3, space=LINEAR_SPACE))
    assert not shares.equals(importance_of(grid_results(score), seed=4, space=LINEAR_SPACE))


def hand_frame(scores: dict[str, list[tuple[str, float]]]) -> pd.DataFrame:
    """arm -> [(status, validation IoU) per seed]; test IoU is the validation IoU minus 0.1."""
    rows = []
    for index, (arm, trials) in enumerate(scores.items()):
        for seed, (status, iou) in enumerate(trials):
            rows.append(
                {
                    "arm": arm,
                    "seed": seed,
                    "trial_id": f"{arm}_s{seed}",
                    "status": status,
                    "primary": True,
                    "train.lr": 1e-3 * (index + 1),
                    "iou": iou,
                    "test_iou": iou - 0.1,
                }
            )
    return pd.DataFrame(rows)


def top_of(results: pd.DataFrame, mode: str = "max") -> pd.DataFrame:
    space = read_search(search_identity({"train.lr": SPACE["train.lr"]}, mode))
    trials, domains, _ = cast_to_domains(trial_table(results, space), space)
    return top_configurations(configuration_table(trials, domains, space), space)


def test_top_k_ranks_by_the_seed_mean_not_the_best_single_seed() -> None:
    lucky = [0.90, 0.60, 0.60]  # the best single seed, but the worst mean
    steady, middling = [0.75, 0.76, 0.74], [0.70, 0.71, 0.72]
    scores = {
        name: [("completed", v) for v in values]
        for name, values in (("lucky", lucky), ("steady", steady), ("middling", middling))
    }
    top = top_of(hand_frame(scores))
    assert top["arm"].tolist() == ["steady", "middling", "lucky"]
    assert top["rank"].tolist() == [1, 2, 3]
    assert top["val_iou_mean"].tolist() == pytest.approx(
        [np.mean(steady), np.mean(middling), np.mean(lucky)]
    )
    assert top.loc[0, "val_iou_std"] == pytest.approx(np.std(steady, ddof=1))
    assert top.loc[0, "test_iou_mean"] == pytest.approx(np.mean(steady) - 0.1)
    assert top.loc[0, "n"] == 3
    assert top.loc[0, "train.lr"] == pytest.approx(1e-3 * 2)
    # lower is better: the same means, the other way round
    assert top_of(hand_frame(scores), mode="min")["arm"].tolist() == ["lucky", "middling", "steady"]


def test_top_k_leaves_out_a_configuration_with_a_pruned_seed() -> None:
    pruned = [("completed", 0.85), ("pruned", 0.86), ("converged", 0.84)]  # best mean
    scored = [("completed", 0.80), ("converged", 0.81), ("completed", 0.79)]
    results = hand_frame({"pruned": pruned, "scored": scored})
    top = top_of(results)
    assert top["arm"].tolist() == ["scored"]
    assert top.loc[0, "val_iou_mean"] == pytest.approx(np.mean([0.80, 0.81, 0.79]))
    # importance and the figures still see it: with its pruned seed's value, as the sampler did
    space = read_search(search_identity({"train.lr": SPACE["train.lr"]}))
    configs = configuration_table(*cast_to_domains(trial_table(results, space), space)[:2], space)
    assert configs.set_index("arm").loc["pruned", "val_iou_mean"] == pytest.approx(0.85)


def test_values_are_cast_to_their_domains_type() -> None:
    channels = CategoricalDistribution([8, 16, 32])
    assert type(cast_value("c", np.int64(16), channels)) is int
    assert type(cast_value("c", 16.0, channels)) is int
    assert cast_value("b", np.True_, CategoricalDistribution([False, True])) is True
    assert type(cast_value("s", np.str_("bce"), CategoricalDistribution(["dice", "bce"]))) is str
    depth = IntDistribution(2, 4)
    assert type(cast_value("model.depth", np.float64(4.0), depth)) is int  # high is inclusive
    assert type(cast_value("train.lr", np.float64(1e-3), FloatDistribution(1e-4, 1e-2))) is float


@pytest.mark.parametrize(
    ("value", "domain", "message"),
    [
        (5, IntDistribution(2, 4), r"model.depth = 5 is outside .*\(int in \[2, 4\]\)"),
        (3.5, IntDistribution(2, 4), r"model.depth = 3.5 is outside"),
        (0.1, FloatDistribution(1e-4, 1e-2, log=True), r"\(float in \[0.0001, 0.01\], log\)"),
        (1, CategoricalDistribution([True, False]), r"= 1 is outside .*one of \[True, False\]"),
        (np.int64(64), CategoricalDistribution([8, 16, 32]), r"= 64 is outside .*\[8, 16, 32\]"),
        ("16", CategoricalDistribution([8, 16, 32]), r"= '16' is outside"),
    ],
)
def test_a_value_outside_its_domain_is_named(value, domain, message) -> None:
    with pytest.raises(AnalysisError, match=message):
        cast_value("model.depth" if isinstance(domain, IntDistribution) else "k", value, domain)


def test_a_recorded_space_optuna_cannot_take_is_refused() -> None:
    with pytest.raises(AnalysisError, match=r"train\.lr: type 'loguniform'"):
        distribution("train.lr", {"type": "loguniform", "low": 1e-4, "high": 1e-2})
    with pytest.raises(AnalysisError, match=r"train\.lr: .*low > 0"):
        distribution("train.lr", {"type": "float", "low": 0.0, "high": 1.0, "log": True})
    assert read_search({"baseline": "baseline"}) is None
    assert read_search({"search": {"metric": "val_iou", "space": {}}}) is None


def test_a_key_outside_its_domain_is_left_out_with_a_note(tmp_path: Path) -> None:
    results = search_results(lambda lr, dropout, channels: 0.8 - 0.1 * dropout)
    results.loc[results["arm"] == results["arm"].iloc[0], "model.base_channels"] = 64  # --set
    markdown, files = report_section(results, search_identity(), tmp_path, seed=0)
    assert "model.base_channels = 64 is outside its search domain (one of [8, 16, 32])" in markdown
    shares = pd.read_csv(tmp_path / "search_importance.csv")
    assert set(shares["hyperparameter"]) == {"train.lr", "model.dropout"}
    assert {path.name for path in files} == SEARCH_FILES


def test_one_configuration_gets_its_top_k_but_no_importance(tmp_path: Path) -> None:
    results = hand_frame({"only": [("completed", 0.8), ("completed", 0.7)]})
    identity = search_identity({"train.lr": SPACE["train.lr"]})
    markdown, files = report_section(results, identity, tmp_path, seed=0)
    assert "No importance, parallel coordinates or slices: 1 configuration(s)" in markdown
    assert {path.name for path in files} == TABLE_FILES
    assert pd.read_csv(tmp_path / "search_top.csv")["arm"].tolist() == ["only"]


def search_sweep_folder(folder: Path, identity: dict[str, Any]) -> Path:
    """test_analysis's sweep folder, its arms given the searched hyperparameters' values."""
    write_sweep_folder(folder, identity)
    results = golden_frame()
    lrs = {"baseline": 1e-3, "dropout": 3e-3, "augmentation": 3e-4, "bce_logits": 1e-4}
    channels = {"baseline": 16, "dropout": 32, "augmentation": 8, "bce_logits": 16}
    results["train.lr"] = results["arm"].map(lrs)
    results["model.base_channels"] = results["arm"].map(channels)
    scored = results["status"].isin(["completed", "converged"])
    for metric in ("dice", "pixel_error"):  # the tables' metrics, so the report's split is test
        results[f"test_{metric}"] = results[metric].where(scored)
    results["test_iou"] = (results["iou"] - 0.05).where(scored)
    results.to_parquet(folder / RESULTS_FILE, index=False)
    return folder


def test_report_of_a_search_sweep_writes_and_lists_the_search_files(tmp_path: Path) -> None:
    space = {key: SPACE[key] for key in ("train.lr", "model.base_channels")}
    sweep = load_sweep(search_sweep_folder(tmp_path / "sweep", search_identity(space)))
    report = build_report(sweep, seed=7)
    names = {path.name for path in report.files}
    assert names >= SEARCH_FILES
    assert all(path.stat().st_size > 0 for path in report.files)
    out = tmp_path / "sweep" / "analysis"
    assert pd.read_csv(out / "search_importance.csv")["importance"].sum() == pytest.approx(1.0)
    # augmentation's mean is counted with its pruned seed, but it is not in the top k; the
    # ranking is on validation although the report's tables are on the test split
    assert report.markdown.startswith("Scores: Test set")
    means = {"baseline": np.mean([0.80, 0.82, 0.81]), "dropout": np.mean([0.83, 0.84, 0.845])}
    top = pd.read_csv(out / "search_top.csv")
    assert top["arm"].tolist() == ["dropout", "baseline"]
    assert top["val_iou_mean"].tolist() == pytest.approx([means["dropout"], means["baseline"]])
    assert top["test_iou_mean"].tolist() == pytest.approx(
        [means["dropout"] - 0.05, means["baseline"] - 0.05]
    )
    configs = pd.read_csv(out / "search_configurations.csv").set_index("arm")
    assert configs.loc["augmentation", "val_iou_mean"] == pytest.approx(np.mean([0.79, 0.6, 0.805]))
    assert "## Search: tpe over 2 hyperparameter(s), 4 configurations" in report.markdown
    assert "forest seed 7" in report.markdown
    assert "### Top 2 configurations by mean validation IoU" in report.markdown


def test_report_of_an_ablation_sweep_has_no_search_part(tmp_path: Path) -> None:
    ablation = build_report(load_sweep(write_sweep_folder(tmp_path / "ablation")))
    assert not {path.name for path in ablation.files} & SEARCH_FILES
    assert "## Search" not in ablation.markdown
    assert not list((tmp_path / "ablation" / "analysis").glob("search_*"))
    empty = search_identity({})  # a search key whose space is empty changes nothing either
    same = build_report(load_sweep(write_sweep_folder(tmp_path / "empty", empty)))
    assert same.markdown == ablation.markdown
    assert [p.name for p in same.files] == [p.name for p in ablation.files]


def test_no_importance_where_no_searched_key_is_left_to_vary(tmp_path: Path) -> None:
    scores = {arm: [("completed", value)] for arm, value in (("a", 0.7), ("b", 0.8), ("c", 0.6))}
    narrow = {"train.lr": {"type": "float", "low": 1e-4, "high": 2.5e-3, "log": True}}
    markdown, files = report_section(hand_frame(scores), search_identity(narrow), tmp_path, 0)
    assert {path.name for path in files} == TABLE_FILES
    assert "train.lr = 0.003 is outside its search domain" in markdown  # c's lr
    assert "No importance, parallel coordinates or slices: no hyperparameter" in markdown
    assert pd.read_csv(tmp_path / "search_top.csv")["arm"].tolist() == ["b", "a", "c"]


def test_a_searched_metric_the_results_lack_is_said_and_nothing_written(tmp_path: Path) -> None:
    identity = search_identity()
    identity["search"]["metric"] = "val_loss"
    results = search_results(lambda lr, dropout, channels: 0.7)
    markdown, files = report_section(results, identity, tmp_path, seed=0)
    assert "Not analysed: results.parquet has no 'loss' column" in markdown
    assert files == [] and not list(tmp_path.iterdir())
