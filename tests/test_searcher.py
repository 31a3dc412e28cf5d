"""SEARCH = "random" | "grid" | "tpe": the settings' validation, the search algorithm each builds,
how seeds reach trials, what TPE's sampler is told, its state across --resume, and tiny sweeps."""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from held_trials import Hold, driver
from ray.tune.experiment import Experiment
from ray.tune.search import BasicVariantGenerator, SearchGenerator

from tunelab import checkpoint
from tunelab.resume import ResumeError, saved_trial_ids
from tunelab.searcher import default_concurrency, describe, search_algorithm, total_trials
from tunelab.space import SpaceError, Study, load_study
from tunelab.sweep import build_parser, study_from_args

TPE_SPACE = """from ray import tune
SPACE = {
    'train.lr': tune.loguniform(1e-4, 1e-2),
    'model.dropout': tune.uniform(0.0, 0.5),
    'model.base_channels': tune.choice([4, 8]),
}
SEARCH = 'tpe'
NUM_SAMPLES = 6
SEEDS = [3, 5]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.py"
    path.write_text(text)
    return path


def tpe_study(tmp_path: Path, extra: str = "") -> Study:
    return load_study(write(tmp_path, TPE_SPACE + extra))


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SPACE = {'train.lr': 1e-3}\nSEARCH = 'bayes'\n", "SEARCH = 'bayes': choose one of"),
        (
            "SPACE = {'train.lr': tune.grid_search([1e-3, 1e-2])}\nSEARCH = 'tpe'\n",
            "cannot sample tune.grid_search (train.lr)",
        ),
        ("ARMS = {'a': {}, 'b': {}}\nSEARCH = 'tpe'\n", "SEARCH = 'tpe' with ARMS"),
        (
            "SPACE = {'seed': tune.choice([0, 1]), 'train.lr': tune.uniform(1e-3, 1e-2)}\n"
            "SEARCH = 'tpe'\n",
            "'seed' is set by SEEDS",
        ),
        ("SPACE = {'train.lr': 1e-3}\nSEARCH = 'tpe'\n", "SPACE has no domain to sample"),
        ("SPACE = {'train.lr': tune.randn(1e-3, 1e-4)}\nSEARCH = 'tpe'\n", "TPE cannot sample"),
        (
            "SPACE = {'train.lr': tune.uniform(1e-3, 1e-2)}\nSEARCH = 'grid'\n",
            "SEARCH = 'grid', but SPACE samples train.lr",
        ),
        (
            "SPACE = {'train.lr': tune.grid_search([1e-3])}\nNUM_SAMPLES = 3\n",
            "would run the same grid again",
        ),
        (
            "SPACE = {'train.lr': tune.uniform(1e-3, 1e-2)}\nMAX_CONCURRENT = 2\n",
            "MAX_CONCURRENT applies to SEARCH = 'tpe'",
        ),
        (
            "SPACE = {'train.lr': tune.uniform(1e-3, 1e-2)}\nSEARCH = 'tpe'\nMAX_CONCURRENT = 0\n",
            "MAX_CONCURRENT = 0: expected an integer >= 1",
        ),
        (
            "SPACE = {'train.lr': tune.uniform(1e-3, 1e-2)}\nSEARCH_SEED = -1\n",
            "SEARCH_SEED = -1",
        ),
        ("SPACE = {'train.lr': tune.uniform(1e-3, 1e-2)}\nNUM_SAMPLES = 0\n", "NUM_SAMPLES = 0"),
        (
            "SPACE = {'train.lr': tune.choice([1e-3, 1e-2])}\nSEARCH = 'tpe'\nNUM_SAMPLES = 4\n",
            "over choices only would draw some configuration twice",
        ),
        (
            "SPACE = {'train.lr': tune.grid_search([1e-3])}\nSEARCH = 'random'\nNUM_SAMPLES = 3\n",
            "over choices only would draw some configuration twice",
        ),
    ],
)
def test_bad_search_settings_are_refused_before_ray_starts(tmp_path, text, message):
    path = write(tmp_path, "from ray import tune\n" + text)
    with pytest.raises(SpaceError) as error:
        load_study(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_search_defaults_to_random_with_a_random_domain_and_grid_without(tmp_path):
    sampled = write(tmp_path, "from ray import tune\nSPACE = {'train.lr': tune.uniform(0.1, 1)}")
    assert load_study(sampled).search == "random"
    gridded = write(tmp_path, "from ray import tune\nSPACE = {'train.lr': tune.grid_search([1])}")
    assert load_study(gridded).search == "grid"
    assert load_study(write(tmp_path, "ARMS = {'a': {}}\n")).search == "grid"


def test_cli_sets_the_budget_and_the_sampler_seed_and_is_validated_with_the_file(tmp_path):
    path = write(tmp_path, TPE_SPACE)
    study = study_from_args(build_parser().parse_args([str(path)]))
    assert (study.num_samples, study.search_seed) == (6, 0)
    study = study_from_args(
        build_parser().parse_args([str(path), "--num-samples", "9", "--search-seed", "4"])
    )
    assert (study.num_samples, study.search_seed) == (9, 4)
    assert study_from_args(build_parser().parse_args([str(path), "--search", "random"])).search == (
        "random"
    )
    grid = write(tmp_path, "from ray import tune\nSPACE = {'train.lr': tune.grid_search([1])}")
    with pytest.raises(SpaceError, match="would run the same grid again"):
        study_from_args(build_parser().parse_args([str(grid), "--num-samples", "2"]))


# --- what each search algorithm proposes ------------------------------------------------------


def proposed(study: Study, slots: int = 2) -> list[dict]:
    """Every config the random/grid generator proposes, without Ray running."""
    generator = search_algorithm(study, slots)
    assert isinstance(generator, BasicVariantGenerator)
    experiment = Experiment(
        "x", run=lambda config: None, config=study.param_space(), num_samples=total_trials(study)
    )
    generator.add_configurations([experiment])
    configs = []
    while (trial := generator.next_trial()) is not None:
        configs.append(trial.config)
    return configs


def test_random_search_keeps_each_configuration_across_its_seeds_and_follows_the_seed(tmp_path):
    path = write(
        tmp_path,
        "from ray import tune\nSPACE = {'train.lr': tune.loguniform(1e-4, 1e-2), "
        "'train.loss': tune.grid_search(['bce', 'dice'])}\nNUM_SAMPLES = 3\nSEEDS = [0, 1]\n",
    )
    study = load_study(path)
    configs = proposed(study)
    assert len(configs) == 3 * 2 * 2
    by_lr: dict[float, set] = {}
    for config in configs:
        by_lr.setdefault(config["train.lr"], set()).add((config["train.loss"], config["seed"]))
    # each sampled lr runs every seed and every grid value: paired, like a grid
    assert len(by_lr) == 3
    assert all(
        pairs == {(loss, s) for loss in ("bce", "dice") for s in (0, 1)} for pairs in by_lr.values()
    )
    assert proposed(study) == configs  # SEARCH_SEED 0 both times: the same configurations
    other = proposed(dataclasses.replace(study, search_seed=1))
    assert {c["train.lr"] for c in other}.isdisjoint(by_lr)


def test_default_concurrency_keeps_every_trial_slot_busy():
    assert default_concurrency(trial_slots=2, replicates=3) == 1
    assert default_concurrency(trial_slots=16, replicates=3) == 6
    assert default_concurrency(trial_slots=1, replicates=1) == 1


def tpe_generator(study: Study, slots: int = 2) -> SearchGenerator:
    searcher = search_algorithm(study, slots)
    generator = SearchGenerator(searcher)
    generator.set_search_properties(study.metric, study.mode, study.param_space())
    generator.add_configurations(
        [
            Experiment(
                "x",
                run=lambda config: None,
                config=study.param_space(),
                num_samples=total_trials(study),
            )
        ]
    )
    return generator


def test_tpe_runs_every_seed_of_a_configuration_and_is_told_their_mean(tmp_path):
    study = tpe_study(tmp_path, "MAX_CONCURRENT = 1\n")
    generator = tpe_generator(study)
    first, second = generator.next_trial(), generator.next_trial()
    assert generator.next_trial() is None  # one configuration in flight (MAX_CONCURRENT)
    sampled = {key: first.config[key] for key in study.space}
    assert {key: second.config[key] for key in study.space} == sampled
    assert (first.config["seed"], second.config["seed"]) == (3, 5)
    assert "__trial_index__" not in first.config
    generator.on_trial_complete(first.trial_id, {"val_iou": 0.5})
    assert generator.next_trial() is None  # the configuration is not finished until both are
    generator.on_trial_complete(second.trial_id, {"val_iou": 0.7})
    (told,) = generator.searcher.searcher.searcher._ot_study.trials
    assert told.value == pytest.approx(0.6) and told.params == sampled
    third = generator.next_trial()
    assert third is not None and third.config["seed"] == 3


def test_a_failed_or_diverged_replicate_counts_as_the_worst_score(tmp_path):
    study = tpe_study(tmp_path, "MAX_CONCURRENT = 1\n")
    generator = tpe_generator(study)
    first, second = generator.next_trial(), generator.next_trial()
    generator.on_trial_complete(first.trial_id, {"val_iou": 0.9})
    generator.on_trial_complete(second.trial_id, {"val_iou": float("nan")})  # diverged
    third, fourth = generator.next_trial(), generator.next_trial()
    generator.on_trial_complete(third.trial_id, {"val_iou": 0.5})
    generator.on_trial_complete(fourth.trial_id, None)  # failed: Ray passes no result
    told = [trial.value for trial in generator.searcher.searcher.searcher._ot_study.trials]
    assert told == [-math.inf, -math.inf]  # not 0.9 and 0.5, the lucky seeds alone


def test_tpe_state_saved_and_restored_draws_no_configuration_twice(tmp_path):
    study = tpe_study(tmp_path)
    generator = tpe_generator(study)
    seen = []
    for _ in range(3):  # three configurations finish, then the driver "dies"
        trials = [generator.next_trial() for _ in study.seeds]
        for trial, value in zip(trials, (0.4, 0.6), strict=True):
            generator.on_trial_complete(trial.trial_id, {"val_iou": value})
        seen.append(tuple(trials[0].config[key] for key in study.space))
    generator.save_to_dir(str(tmp_path), session_str="s")
    restored = tpe_generator(study)
    restored.restore_from_dir(str(tmp_path))
    fresh = tpe_generator(study)  # what a restart without the sampler's state would draw
    later = []
    while (trial := restored.next_trial()) is not None:
        restored.on_trial_complete(trial.trial_id, {"val_iou": 0.5})
        later.append(tuple(trial.config[key] for key in study.space))
    configurations = seen + later[:: len(study.seeds)]
    assert len(configurations) == study.num_samples == len(set(configurations))
    again = fresh.next_trial().config
    assert tuple(again[key] for key in study.space) == seen[0]


def test_resume_refuses_a_sampler_state_out_of_step_with_the_trials(tmp_path):
    study = tpe_study(tmp_path)
    generator = tpe_generator(study)
    trials = [generator.next_trial() for _ in study.seeds]
    for trial in trials:
        generator.on_trial_complete(trial.trial_id, {"val_iou": 0.5})
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    generator.save_to_dir(str(sweep_dir), session_str="2026-12-04")
    (sweep_dir / "tuner.pkl").write_bytes(pickle.dumps({}))

    def experiment_state(trial_ids: list[str]) -> None:
        data = [[json.dumps({"trial_id": t}), "{}"] for t in trial_ids]
        path = sweep_dir / "experiment_state-2026-12-04.json"
        path.write_text(json.dumps({"trial_data": data}))

    ids = [trial.trial_id for trial in trials]
    experiment_state(ids)
    assert saved_trial_ids(sweep_dir) == ids  # in step: resumable
    experiment_state([*ids, "newer"])  # Ray saved a trial the sampler's state predates
    with pytest.raises(ResumeError, match="out of step with the 3 trials"):
        saved_trial_ids(sweep_dir)
    experiment_state(ids)
    next(sweep_dir.glob("searcher-state-*.pkl")).unlink()
    with pytest.raises(ResumeError, match="no searcher-state"):
        saved_trial_ids(sweep_dir)


def test_resume_refuses_search_settings_other_than_the_sweep_s(tmp_path):
    from tunelab.runner import SetupError, SweepOptions, _sweep_identity

    study = tpe_study(tmp_path)
    sweep_dir = tmp_path / "runs" / "space"
    sweep_dir.mkdir(parents=True)
    identity = {"sweep_id": "s1", "experiment": "e", "search": describe(study)}
    (sweep_dir / "tunelab.json").write_text(json.dumps(identity))
    options = SweepOptions(
        storage=str(tmp_path / "runs"),
        address=None,
        resume=True,
        gpus_per_trial=None,
        max_failures=1,
        num_cpus=2,
        verbose=0,
        mlflow_uri="sqlite:///unused.db",
        experiment=None,
        log_model=False,
    )
    for changed in ({"num_samples": 9}, {"search_seed": 1}):
        with pytest.raises(SetupError, match="with another search"):
            _sweep_identity(sweep_dir, dataclasses.replace(study, **changed), options)
    # the same search goes on to check Ray's saved state (none here)
    with pytest.raises(SetupError, match="no Ray experiment state"):
        _sweep_identity(sweep_dir, study, options)


def test_describe_records_each_domain_for_analysis(tmp_path):
    study = tpe_study(tmp_path)
    search = describe(study)
    assert (search["method"], search["seed"], search["num_samples"]) == ("tpe", 0, 6)
    assert search["space"] == {
        "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "model.dropout": {"type": "float", "low": 0.0, "high": 0.5, "log": False},
        "model.base_channels": {"type": "categorical", "choices": [4, 8]},
    }
    json.dumps(search)  # it goes into tunelab.json


def test_long_sampled_floats_are_shortened_in_arm_labels(tmp_path):
    study = tpe_study(tmp_path)
    params = {"train.lr": 0.00012345678912, "model.dropout": 0.25, "model.base_channels": 8}
    assert study.arm_label(params) == "lr=0.000123457,dropout=0.25,base_channels=8"


# --- tiny sweeps ------------------------------------------------------------------------------

TINY_TPE = """from ray import tune
BASE['data.test_fraction'] = 0
SPACE = {'train.lr': tune.loguniform(1e-4, 1e-2), 'model.dropout': tune.uniform(0.0, 0.5)}
SEARCH = 'tpe'
NUM_SAMPLES = 4
SEEDS = [0, 1]
ASHA = {'grace_period': 1, 'reduction_factor': 2}
"""


def configurations(results: pd.DataFrame) -> pd.DataFrame:
    primary = results[results["primary"]]
    return primary.groupby("arm").agg(
        seeds=("seed", lambda s: tuple(sorted(s))),
        lrs=("train.lr", "nunique"),
        iou=("iou", "mean"),
    )


@pytest.mark.e2e
def test_tiny_tpe_sweep_with_asha_samples_distinct_configurations(env, write_space, sweep):
    space = write_space(TINY_TPE + "BASE['train.checkpoint_every_s'] = 0\n", epochs=3)
    assert sweep(space, "--keep-checkpoints", "tested") == 0
    sweep_dir = env / "runs" / "tiny"
    for trial in sweep_dir.glob("lr=*"):  # one checkpoint left per trial, weights only
        (kept,) = trial.glob("checkpoint_*")
        assert list(checkpoint.load_state(kept)) == ["model"]
    results = pd.read_parquet(sweep_dir / "results.parquet")
    per_arm = configurations(results)
    assert len(per_arm) == 4  # four distinct configurations ...
    assert (per_arm["seeds"] == (0, 1)).all() and (per_arm["lrs"] == 1).all()  # ... x 2 seeds
    primary = results[results["primary"]]
    assert "pruned" in set(primary["status"])  # ASHA pruned some of them
    # the sampler was told each configuration's mean over its seeds' last validation IoU
    with open(glob.glob(str(sweep_dir / "searcher-state-*.pkl"))[0], "rb") as file:
        optuna_study = pickle.load(file)["_ot_study"]
    told = sorted(round(trial.value, 6) for trial in optuna_study.trials)
    assert told == sorted(round(v, 6) for v in per_arm["iou"])
    identity = json.loads((sweep_dir / "tunelab.json").read_text())
    assert identity["search"]["method"] == "tpe" and set(identity["search"]["space"]) == {
        "train.lr",
        "model.dropout",
    }


def _trials_by_status(sweep_dir: Path, records) -> dict[str, int]:
    """Trials that have reported, by the status of their last report."""
    last = [
        lines[-1]["status"] for path in sweep_dir.glob("*/result.json") if (lines := records(path))
    ]
    return {status: last.count(status) for status in set(last)}


@pytest.mark.e2e
def test_resumed_tpe_sweep_does_not_repeat_configurations(env, write_space, records, gates):
    space = write_space(TINY_TPE.replace("NUM_SAMPLES = 4", "NUM_SAMPLES = 5"), epochs=2)
    options = ["--storage", str(env / "runs"), "--num-cpus", "2", "--quiet", "--scheduler", "none"]
    command = [sys.executable, "-m", "tunelab.sweep", str(space), *options]
    sweep_dir = env / "runs" / "tiny"
    # one configuration (its 2 seeds) at a time: the first 2 configurations finish, the third
    # waits before its last epoch, so Ctrl+C comes with 6 of the 10 trials drawn
    hold = Hold("ctrl+c", epoch=2, free=4)

    def four_finished_two_held() -> bool:
        done = _trials_by_status(sweep_dir, records).get("completed", 0)
        return done == 4 and len(gates.held(hold.name)) == 2

    with driver(gates.command(space, *options, rules=(hold,)), env / "driver.log", gates) as first:
        first.wait_until(four_finished_two_held, "4 trials finished and 2 held")
        first.process.send_signal(signal.SIGINT)  # Ctrl+C: Tune saves its state, the sampler's
        assert first.end(timeout_s=120) == 130, first.tail()
    assert _trials_by_status(sweep_dir, records) == {"completed": 4, "running": 2}
    assert not (sweep_dir / "results.parquet").exists()

    resumed = subprocess.run([*command, "--resume"], env=os.environ.copy(), timeout=600)
    assert resumed.returncode == 0
    per_arm = configurations(pd.read_parquet(sweep_dir / "results.parquet"))
    assert len(per_arm) == 5 and (per_arm["seeds"] == (0, 1)).all()
    lrs = np.array([float(arm.split(",")[0].removeprefix("lr=")) for arm in per_arm.index])
    assert len(np.unique(lrs)) == 5
