"""The sweep CLI's options reach what they control: the study, the scheduler, the resources Ray
reserves per trial, and the options the runner receives. Only the last test starts Ray."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from tunelab import sweep as sweep_cli
from tunelab.runner import (
    SetupError,
    SweepOptions,
    _check_fits,
    _scheduler,
    _trainable,
)
from tunelab.space import SpaceError
from tunelab.sweep import build_parser, study_from_args

SPACE = """from ray import tune
BASE = {'train.max_epochs': 9}
SPACE = {'train.lr': tune.grid_search([1e-3, 1e-2])}
SEEDS = [0, 1, 2]
ASHA = {'grace_period': 2, 'reduction_factor': 3}
RESOURCES = {'cpu': 1, 'gpu': 0}
"""


@pytest.fixture
def space(tmp_path: Path) -> Path:
    path = tmp_path / "search.py"
    path.write_text(SPACE)
    return path


def study_for(space: Path, *options: str):
    return study_from_args(build_parser().parse_args([str(space), *options]))


def options(**changes) -> SweepOptions:
    values = {
        "storage": "/tmp/runs",
        "address": None,
        "resume": False,
        "gpus_per_trial": None,
        "max_failures": 1,
        "num_cpus": 2,
        "verbose": 0,
        "mlflow_uri": "sqlite:///mlflow.db",
        "experiment": None,
        "log_model": False,
    }
    return SweepOptions(**{**values, **changes})


def test_seeds_replace_the_space_s_seeds_in_the_grid(space):
    assert study_for(space).param_space()["seed"] == {"grid_search": [0, 1, 2]}
    assert study_for(space, "--seeds", "4,7").param_space()["seed"] == {"grid_search": [4, 7]}


def test_test_data_is_every_trial_s_absolute_test_root_and_turns_the_internal_split_off(
    space, monkeypatch
):
    monkeypatch.chdir(space.parent)
    study = study_for(space, "--test-data", "hospital_b")
    first = study.trial_config(study.first_params())
    assert first.data.test_root == str(space.parent / "hospital_b")
    assert first.data.internal_test_fraction == 0.0
    with pytest.raises(SpaceError, match="one test set per sweep"):
        study_for(space, "--test-data", "b", "--set", "data.test_fraction=0.1")
    plain = study_for(space)
    assert plain.trial_config(plain.first_params()).data.internal_test_fraction == 0.2


def test_max_epochs_reaches_every_trial_and_asha_s_horizon(space):
    study = study_for(space, "--max-epochs", "5")
    first = study.trial_config(study.first_params())
    assert first.train.max_epochs == 5
    assert _scheduler(study, first)._max_t == 5
    unchanged = study_for(space)
    assert unchanged.trial_config(unchanged.first_params()).train.max_epochs == 9


def test_scheduler_none_turns_asha_off(space):
    study = study_for(space)
    base = study.trial_config(study.first_params())
    asha = _scheduler(study, base)
    assert isinstance(asha, ASHAScheduler)
    # rungs at grace 2 times powers of the reduction factor 3, below max_t 9: epochs 2 and 6
    assert sorted(milestone for milestone, _ in asha._brackets[0]._rungs) == [2, 6]
    assert asha._time_attr == "epoch"
    assert isinstance(_scheduler(study_for(space, "--scheduler", "none"), base), FIFOScheduler)
    last_wins = study_for(space, "--scheduler", "none", "--scheduler", "asha")
    assert isinstance(_scheduler(last_wins, base), ASHAScheduler)


def test_gpus_and_cpus_per_trial_are_what_ray_reserves(space):
    study = study_for(space, "--gpus-per-trial", "0.25", "--cpus-per-trial", "0.5")
    trainable = _trainable(study, options(gpus_per_trial=0.25))
    assert trainable._resources.required_resources == {"CPU": 0.5, "GPU": 0.25}
    default = study_for(space)
    trainable = _trainable(default, options(gpus_per_trial=0.0))
    assert trainable._resources.required_resources == {"CPU": 1.0}


def test_cli_flags_reach_the_runner_s_options(space, monkeypatch):
    received = {}

    def fake_run(study, opts):  # the runner, without Ray
        received["options"] = opts
        return "done"

    monkeypatch.setattr("tunelab.runner.run_sweep", fake_run)
    argv = [str(space), "--experiment", "paper-a", "--log-model", "--gpus-per-trial", "0.5"]
    argv += ["--max-failures", "3", "--quiet", "--storage", "relative/runs", "--resume"]
    argv += ["--keep-checkpoints", "tested"]
    assert sweep_cli.main(argv) == 0
    got = received["options"]
    assert (got.experiment, got.log_model, got.gpus_per_trial) == ("paper-a", True, 0.5)
    assert got.keep_checkpoints == "tested"
    assert (got.max_failures, got.verbose, got.resume) == (3, 0, True)
    assert got.storage == str(Path("relative/runs").resolve())
    assert sweep_cli.main([str(space)]) == 0
    got = received["options"]
    assert (got.experiment, got.log_model, got.gpus_per_trial, got.verbose) == (
        None,
        False,
        None,
        1,
    )
    assert got.keep_checkpoints == "all"


def test_a_trial_larger_than_the_local_ray_instance_is_refused():
    _check_fits({"cpu": 2.0, "gpu": 0.0}, {"CPU": 2.0})  # fits exactly
    with pytest.raises(SetupError, match=r"asks for 0\.25 GPU \(--gpus-per-trial.*has 0;"):
        _check_fits({"cpu": 1.0, "gpu": 0.25}, {"CPU": 2.0})
    with pytest.raises(SetupError, match=r"asks for 3 CPU \(--cpus-per-trial.*has 2;"):
        _check_fits({"cpu": 3.0, "gpu": 0.0}, {"CPU": 2.0, "GPU": 1.0})


@pytest.mark.e2e
def test_asking_for_a_gpu_on_a_machine_without_one_stops_instead_of_waiting(
    env, write_space, sweep, capsys
):
    space = write_space("ARMS = {'a': {}}\nSEEDS = [0]\n")
    assert sweep(space, "--gpus-per-trial", "1") == 2
    assert "asks for 1 GPU (--gpus-per-trial" in capsys.readouterr().err
    assert not list((env / "runs" / "tiny").glob("*/result.json"))  # no trial ran


def test_set_overrides_the_base_and_an_arm_keeps_its_own_value(tmp_path):
    path = tmp_path / "ablation.py"
    path.write_text(
        "BASE = {'train.max_epochs': 9, 'stop.enabled': True}\n"
        "ARMS = {'plain': {}, 'short': {'train.max_epochs': 3}}\n"
    )
    study = study_for(path, "--set", "train.max_epochs=5", "--no-convergence")
    plain, short = (study.trial_config({"arm": arm, "seed": 0}) for arm in ("plain", "short"))
    assert (plain.train.max_epochs, short.train.max_epochs) == (5, 3)
    assert not plain.stop.enabled and not short.stop.enabled
