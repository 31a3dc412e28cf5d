"""Documented sweep settings, each checked by its effect: `--num-cpus`, `--quiet`,
`--no-convergence`, `NAME` other than the file's stem, `eval.otsu=False` and `SEARCH_SEED`.

What only a run shows comes from ONE tiny sweep shared by the module (two 1-CPU trials, four
epochs); the rest is checked in this process without Ray.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from ray.tune.experiment import Experiment
from ray.tune.search import BasicVariantGenerator, SearchGenerator

from tunelab import runner
from tunelab import sweep as sweep_cli
from tunelab.searcher import search_algorithm, total_trials
from tunelab.space import Study, load_study
from tunelab.sweep import build_parser, study_from_args
from tunelab.tracking.layout import TAG_ROLE
from tunelab.train import fit

# the convergence rule fires at epoch 3, the first with a trend over a window of 3 (any trend is
# "no longer falling" at this threshold): test_sweep.py's stopper test shows a sweep stop there
FIRES_AT_EPOCH_3 = {
    "stop.window": 3,
    "stop.patience": 0,
    "stop.min_epochs": 0,
    "stop.threshold": 100.0,
}
ARMS = "ARMS = {'a': {}, 'b': {'model.dropout': 0.1}}\nSEEDS = [0]\n"


@dataclass(frozen=True)
class FlaggedSweep:
    root: Path
    output: str  # the command's stdout and stderr

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(f"sqlite:///{self.root / 'mlflow.db'}")

    def trial_runs(self, experiment: str) -> list:
        found = self.client.get_experiment_by_name(experiment)
        query = f"tags.`{TAG_ROLE}` = 'trial'"
        return self.client.search_runs([found.experiment_id], query) if found else []


@pytest.fixture(scope="module")
def flagged(tmp_path_factory: pytest.TempPathFactory, tiny_trial: dict) -> FlaggedSweep:
    """`python -m tunelab.sweep file_stem.py --num-cpus 1 --quiet --no-convergence`, where the
    file says NAME = 'renamed' and eval.otsu = False, and its rule would stop every trial at
    epoch 3 of 4. In a subprocess: all it prints, Ray's live output included, is captured."""
    root = tmp_path_factory.mktemp("flags")
    base = {**tiny_trial, "train.max_epochs": 4, **FIRES_AT_EPOCH_3, "eval.otsu": False}
    space = root / "file_stem.py"
    space.write_text(f"NAME = 'renamed'\nBASE = {base!r}\n{ARMS}")
    env = {
        **os.environ,
        "TUNELAB_CACHE": str(root / "cache"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "RAY_DEDUP_LOGS": "1",
    }
    command = [sys.executable, "-m", "tunelab.sweep", str(space), "--storage", str(root / "runs")]
    command += ["--num-cpus", "1", "--quiet", "--no-convergence"]
    # run in `root`: MLflow's artifact store (./mlruns beside a sqlite URI) goes there too
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return FlaggedSweep(root, done.stdout + done.stderr)


def primary_results(flagged: FlaggedSweep) -> pd.DataFrame:
    results = pd.read_parquet(flagged.root / "runs" / "renamed" / "results.parquet")
    return results[results["primary"]]


@pytest.mark.e2e
def test_name_other_than_the_file_stem_names_the_folder_and_the_experiment(flagged):
    runs = flagged.root / "runs"
    assert [p.name for p in runs.iterdir()] == ["renamed"]  # no folder named after the stem
    assert (runs / "renamed" / "results.parquet").is_file()
    experiments = {e.name for e in flagged.client.search_experiments()}
    assert "renamed" in experiments and "file_stem" not in experiments
    assert len(flagged.trial_runs("renamed")) == 2
    assert set(primary_results(flagged)["sweep"]) == {"renamed"}


@pytest.mark.e2e
def test_no_convergence_runs_every_trial_to_its_last_epoch(flagged):
    primary = primary_results(flagged)
    # without the flag the rule stops both at epoch 3 (see the in-process control below)
    assert sorted(primary["status"]) == ["completed", "completed"]
    assert sorted(primary["epochs"]) == [4, 4]


@pytest.mark.e2e
def test_num_cpus_1_runs_one_trial_at_a_time(flagged):
    # the tracker opens a trial's run when Ray starts the trial and closes it when it ends, in
    # the order Ray reports them: with the 2 CPUs of this machine both trials would be open
    # at once, as both are pending from the start
    runs = sorted(flagged.trial_runs("renamed"), key=lambda run: run.info.start_time)
    assert len(runs) == 2
    assert runs[1].info.start_time >= runs[0].info.end_time


@pytest.mark.e2e
def test_quiet_prints_the_summary_and_no_live_trial_table(flagged):
    out = flagged.output
    assert "| a |" in out and "| b |" in out and "results: " in out  # the summary is printed
    # what Ray prints at verbose 1: the trial table, each trial's start and end
    # (its configuration box stays: Ray prints it at verbose 0 too)
    for live in ("Trial status:", "Trial name", "started with configuration", "completed after"):
        assert live not in out


@pytest.mark.e2e
def test_otsu_off_scores_no_otsu_threshold(flagged):
    root = flagged.root / "runs" / "renamed"
    results = pd.read_parquet(root / "results.parquet")
    assert set(results["threshold"]) == {"0.5"}  # default: {"0.5", "otsu"}
    assert not [c for c in pd.read_parquet(root / "epochs.parquet") if "otsu" in c]
    for run in flagged.trial_runs("renamed"):
        assert run.data.metrics and not [k for k in run.data.metrics if "otsu" in k]


# --- in this process, no Ray -----------------------------------------------------------------


def write_space(tmp_path: Path, text: str, name: str = "space.py") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_no_convergence_turns_the_rule_off_for_every_trial(tmp_path, tiny_trial):
    # no test set: nothing to score at the end (nor its boundary metrics to import)
    base = {**tiny_trial, "data.cache_dir": str(tmp_path), "data.test_fraction": 0}
    base["train.max_epochs"] = 4
    arms = "ARMS = {'a': {}, 'own_rule': {'stop.window': 4}}\nSEEDS = [0]\n"
    space = write_space(tmp_path, f"BASE = {{**{base!r}, **{FIRES_AT_EPOCH_3!r}}}\n{arms}")
    plain, flagged = (
        study_from_args(build_parser().parse_args([str(space), *flag]))
        for flag in ([], ["--no-convergence"])
    )
    for arm in ("a", "own_rule"):
        assert plain.trial_config({"arm": arm, "seed": 0}).stop.enabled
        assert not flagged.trial_config({"arm": arm, "seed": 0}).stop.enabled
    # the control: without the flag the rule stops a trial at epoch 3 (the sweep above shows
    # that with it, Ray's stopper lets every trial run to its last epoch)
    statuses = [r.status for r in fit(plain.trial_config({"arm": "a", "seed": 0}))]
    assert statuses == ["running", "running", "converged"]


def test_num_cpus_is_what_the_local_ray_instance_gets(tmp_path, monkeypatch):
    space = write_space(tmp_path, "ARMS = {'a': {}}\n")
    received = []
    monkeypatch.setattr("tunelab.runner.run_sweep", lambda study, opts: received.append(opts))
    assert sweep_cli.main([str(space), "--num-cpus", "1"]) == 0
    assert sweep_cli.main([str(space)]) == 0
    assert [opts.num_cpus for opts in received] == [1, None]  # None: Ray takes every CPU
    started = []
    monkeypatch.setattr("ray.init", lambda **kwargs: started.append(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # else it attaches to that cluster
    for name in (
        "TUNE_GLOBAL_CHECKPOINT_S",
        "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S",
    ):
        monkeypatch.setenv(name, "0")  # what _init_ray sets, undone after the test
    for opts in received:
        runner._init_ray(opts)
    assert [kwargs["num_cpus"] for kwargs in started] == [1, None]


RANDOM = """from ray import tune
SPACE = {'train.lr': tune.loguniform(1e-4, 1e-2), 'model.dropout': tune.uniform(0.0, 0.5)}
NUM_SAMPLES = 4
SEEDS = [0]
"""


def _draws(study: Study, generator, score_each: bool) -> list[tuple[float, float]]:
    """The (lr, dropout) of every trial `generator` proposes for the study, without Ray; with
    `score_each`, each is told a score so that a sequential sampler draws the next."""
    space = study.param_space()
    run = Experiment("x", run=lambda config: None, config=space, num_samples=total_trials(study))
    generator.add_configurations([run])
    draws = []
    while (trial := generator.next_trial()) is not None:
        draws.append((trial.config["train.lr"], trial.config["model.dropout"]))
        if score_each:
            generator.on_trial_complete(trial.trial_id, {"val_iou": 0.5})
    return draws


def random_draws(study: Study) -> list[tuple[float, float]]:
    """Every trial the sweep's random generator proposes."""
    generator = search_algorithm(study, 2)
    assert isinstance(generator, BasicVariantGenerator)
    return _draws(study, generator, score_each=False)


def tpe_draws(study: Study) -> list[tuple[float, float]]:
    """TPE's first configurations (its random start-up), one per configuration."""
    generator = SearchGenerator(search_algorithm(study, 2))
    generator.set_search_properties(study.metric, study.mode, study.param_space())
    return _draws(study, generator, score_each=True)


@pytest.mark.parametrize(("search", "draws"), [("random", random_draws), ("tpe", tpe_draws)])
def test_search_seed_same_seed_same_draws_other_seed_other_draws(tmp_path, search, draws):
    text = f"{RANDOM}SEARCH = {search!r}\n"
    seven = draws(load_study(write_space(tmp_path, f"{text}SEARCH_SEED = 7\n", "a.py")))
    assert len(seven) == 4 and len(set(seven)) == 4
    assert draws(load_study(write_space(tmp_path, f"{text}SEARCH_SEED = 7\n", "b.py"))) == seven
    unset = write_space(tmp_path, text, "c.py")  # --search-seed is the same setting
    flag = study_from_args(build_parser().parse_args([str(unset), "--search-seed", "7"]))
    assert draws(flag) == seven
    others = [
        draws(load_study(write_space(tmp_path, f"{text}SEARCH_SEED = 8\n", "d.py"))),
        draws(load_study(unset)),  # the default, 0
    ]
    for other in others:
        assert set(other).isdisjoint(seven)  # continuous draws: no value twice by chance
