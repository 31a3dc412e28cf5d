"""Search-space files: loading, validation before Ray starts, and the shipped spaces."""

import subprocess
import sys
from pathlib import Path

import pytest
from ray import tune
from ray.tune.experiment import Experiment
from ray.tune.search import BasicVariantGenerator

from tunelab.config import TrialConfig
from tunelab.space import SpaceError, Study, load_study

SPACES = sorted((Path(__file__).parents[1] / "search_spaces").glob("*.py"))


def write(tmp_path: Path, text: str, name: str = "space.py") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def ray_trials(study: Study) -> list[dict]:
    """The params of every trial Ray's generator proposes for the study (TPE's configurations
    drawn at random from the same domains, crossed with the seeds), without running any."""
    space = study.param_space()
    if study.search == "tpe":  # TPE's searcher adds the seeds itself
        space = {**space, "seed": tune.grid_search(list(study.seeds))}
    generator = BasicVariantGenerator(constant_grid_search=True, random_state=0)
    run = Experiment("x", run=lambda config: None, config=space, num_samples=study.num_samples)
    generator.add_configurations([run])
    trials = []
    while (trial := generator.next_trial()) is not None:
        trials.append(trial.config)
    return trials


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_shipped_spaces_are_valid(path):
    study = load_study(path)
    assert study.name == path.stem
    trials = ray_trials(study)
    # every trial the sweep would run is a valid config (TrialConfig raises otherwise), whatever
    # load_study's own checks found
    configs = [study.trial_config(params) for params in trials]
    assert {cfg.seed for cfg in configs} == set(study.seeds)
    assert {p.get("arm") for p in trials} == (set(study.arms) or {None})


def test_all_study_axes_are_shipped():
    names = {p.stem for p in SPACES}
    assert {"losses", "dropout", "skip_mode", "depth", "input_size", "threshold"} <= names
    assert {"ebhi_table1", "crc_losses"} <= names


def test_every_shipped_space_is_in_readme():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    shipped = readme.split("Shipped studies:", 1)[1].split("\n\n", 1)[0]
    assert [p.name for p in SPACES if f"`{p.name}`" not in shipped] == []


def test_readme_s_example_is_the_shipped_losses_space():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = readme.split("A complete\nexample, `search_spaces/losses.py`:", 1)[1]
    example = example.split("```python\n", 1)[1].split("```", 1)[0]
    shipped = (Path(__file__).resolve().parents[1] / "search_spaces" / "losses.py").read_text()
    code = shipped.split('"""', 2)[2]  # after the docstring

    def statements(text: str) -> list[str]:
        return [line.split("  #")[0] for line in text.splitlines() if line and line[0] != "#"]

    assert statements(example) == statements(code)


def test_losses_is_an_ablation_that_runs_every_trial_to_its_end():
    # asynchronous rungs would prune by arrival order (README, "Fair pruning")
    study = load_study(Path("search_spaces/losses.py"))
    assert study.scheduler == "none"
    assert tuple(study.seeds) == (0, 1)


def test_ebhi_table1_is_study_a():
    study = load_study(Path("search_spaces/ebhi_table1.py"))
    assert study.kind == "ablation" and study.scheduler == "none"
    assert list(study.arms) == ["baseline", "bce_logits", "augmentation", "dropout"]
    assert study.seeds == (0, 1, 2) and study.baseline == "baseline"
    dropout = study.trial_config({"arm": "dropout", "seed": 1})
    assert dropout.data.balance and dropout.model.dropout > 0 and dropout.seed == 1
    # study A's protocol: no separate test set, the last epoch's model
    assert dropout.data.internal_test_fraction == 0 and dropout.eval.checkpoint == "last"
    assert study.trial_config({"arm": "bce_logits", "seed": 0}).train.loss == "bce_logits"


def test_search_defaults_to_asha_and_ablation_to_none(tmp_path):
    search = load_study(
        write(
            tmp_path,
            "from ray import tune\nSPACE = {'model.dropout': tune.grid_search([0.0, 0.1])}\n",
        )
    )
    ablation = load_study(
        write(tmp_path, "ARMS = {'a': {}, 'b': {'model.dropout': 0.1}}\n", "abl.py")
    )
    assert (search.kind, search.scheduler) == ("search", "asha")
    assert (ablation.kind, ablation.scheduler, ablation.baseline) == ("ablation", "none", "a")


def test_param_space_grids_over_seeds(tmp_path):
    study = load_study(write(tmp_path, "ARMS = {'a': {}, 'b': {}}\nSEEDS = [3, 4]\n"))
    space = study.param_space()
    assert space["arm"] == {"grid_search": ["a", "b"]}
    assert space["seed"] == {"grid_search": [3, 4]}


def test_folds_are_replicates_like_seeds(tmp_path):
    study = load_study(write(tmp_path, "ARMS = {'a': {}, 'b': {}}\nSEEDS = [3]\nFOLDS = 4\n"))
    space = study.param_space()
    assert space["data.fold"] == {"grid_search": [0, 1, 2, 3]}
    assert space["seed"] == {"grid_search": [3]} and space["arm"] == {"grid_search": ["a", "b"]}
    cfg = study.trial_config({"arm": "b", "seed": 3, "data.fold": 2})
    assert (cfg.data.folds, cfg.data.fold, cfg.seed) == (4, 2, 3)
    assert study.arm_label({"arm": "b", "seed": 3, "data.fold": 2}) == "b"  # not an arm of its own
    assert study.trial_config(study.first_params()).data.fold == 0
    search = load_study(write(tmp_path, "SPACE = {'model.dropout': 0.1}\nFOLDS = 2\n"))
    assert search.arm_label({"model.dropout": 0.1, "seed": 0, "data.fold": 1}) == "dropout=0.1"
    assert "data.fold" not in load_study(write(tmp_path, "SPACE = {}\n")).param_space()


def test_arm_labels(tmp_path):
    search = load_study(
        write(
            tmp_path,
            "from ray import tune\nSPACE = {'train.loss': tune.grid_search(['bce', 'dice'])}\n",
        )
    )
    assert search.arm_label({"train.loss": "dice", "seed": 0}) == "loss=dice"
    ablation = load_study(write(tmp_path, "ARMS = {'base': {}}\n", "abl.py"))
    assert ablation.arm_label({"arm": "base", "seed": 0}) == "base"


def test_thresholds_setting_feeds_eval(tmp_path):
    study = load_study(write(tmp_path, "ARMS = {'a': {}}\nTHRESHOLDS = [0.5, 0.3]\n"))
    assert study.trial_config({"arm": "a", "seed": 0}).eval.thresholds == (0.5, 0.3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "SPACE = {'model.dropot': 0.1}\n",
            r"SPACE: unknown key 'model.dropot'; did you mean 'model.dropout'",
        ),
        (
            "from ray import tune\nSPACE = {'train.loss': tune.grid_search(['bce', 'focal'])}\n",
            r"SPACE: train.loss = 'focal' is invalid.*'bce', 'bce_logits'",
        ),
        (
            "from ray import tune\nSPACE = {'model.depth': tune.grid_search([4, 6])}\n"
            "BASE = {'data.input_size': 32}\n",
            r"2\*\*model.depth = 64",
        ),
        (
            "from ray import tune\nSPACE = {'model.dropout': tune.grid_search([])}\n",
            r"grid_search\(\[\]\) is empty",
        ),
        (
            "from ray import tune\nSPACE = {'model.dropout': tune.uniform(0.0, 1.5)}\n",
            r"model.dropout = 1.5",
        ),
        (
            "SPACE = {'model.depth': 'four'}\n",
            r"model.depth = 'four' is invalid: expected an integer",
        ),
        ("ARMS = {'a': {'train.lr': -1}}\n", r"ARMS\['a'\]: train.lr = -1.0"),
        ("ARMS = {}\n", r"ARMS is empty"),
        ("ARMS = {'a': {}}\nBASELINE = 'b'\n", r"BASELINE = 'b' is not an arm; arms: a"),
        ("SPACE = {}\nARMS = {'a': {}}\n", r"exactly one of SPACE .* or ARMS"),
        ("NAME = 'x'\n", r"exactly one of SPACE .* or ARMS"),
        ("SPACE = {'seed': 1}\n", r"'seed' is set by SEEDS"),
        ("ARMS = {'a': {'data.fold': 1}}\n", r"ARMS\['a'\]: 'data.fold' here would turn folds"),
        ("SPACE = {'data.folds': 5}\n", r"SPACE: 'data.folds' here .* set FOLDS = k instead"),
        ("SPACE = {}\nFOLDS = 1\n", r"FOLDS = 1: expected an integer k >= 2"),
        ("ARMS = {'a': {'data.test_seed': 3}}\n", r"'data.test_seed' here would test arms on"),
        ("SPACE = {}\nMETRIC = 'test_iou'\n", r"METRIC = 'test_iou': decisions are made on"),
        ("SPACE = {}\nSEED = [1]\n", r"unknown setting SEED; did you mean SEEDS\?"),
        ("SPACE = {}\nSEEDS = []\n", r"SEEDS = \[\]: expected a non-empty list of integers"),
        (
            "SPACE = {}\nSCHEDULER = 'hyperband'\n",
            r"SCHEDULER = 'hyperband': choose 'asha' or 'none'",
        ),
        ("SPACE = {'model.depth': 3,\n", r"space.py:1: syntax error"),
        (
            "import os\nSPACE = {'data.root': os.environ['NOPE_NOT_SET']}\n",
            r"space.py:2: the file raised KeyError",
        ),
    ],
)
def test_bad_spaces_fail_with_file_key_and_choices(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SpaceError, match=message) as info:
        load_study(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(SpaceError, match="no such search-space file"):
        load_study(tmp_path / "nope.py")


def test_cli_rejects_bad_space_without_importing_ray_or_torch(tmp_path):
    path = write(
        tmp_path,
        "from ray import tune\nSPACE = {'train.loss': tune.grid_search(['bce', 'focal'])}\n",
    )
    # the CLI in a fresh interpreter, which reports afterwards what the run loaded: the refusal
    # is fast because it starts no Ray and loads neither torch nor the runner (the space file
    # itself imports `ray.tune`); times are in BENCHMARKS.md
    probe = (
        "import sys\n"
        "from tunelab.sweep import main\n"
        f"code = main([{str(path)!r}, '--storage', {str(tmp_path / 'runs')!r}])\n"
        "import ray\n"
        "loaded = [m for m in ('torch', 'tunelab.runner', 'tunelab.train') if m in sys.modules]\n"
        "print(loaded, ray.is_initialized())\n"
        "raise SystemExit(code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "train.loss = 'focal'" in proc.stderr and str(path) in proc.stderr
    assert proc.stdout.strip() == "[] False"
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written


def test_cli_override_is_validated(tmp_path):
    path = write(tmp_path, "ARMS = {'a': {}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "tunelab.sweep", str(path), "--set", "model.depth=9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "2**model.depth" in proc.stderr


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_first_trial_config_is_complete(path):
    # a space's BASE alone may be invalid (crc_losses' base has no multi-class loss yet);
    # the sweep builds its shared data and scheduler settings from the first trial instead:
    # it sets every key the trials vary, and in a grid it is the trial Ray proposes first
    study = load_study(path)
    first, trials = study.first_params(), ray_trials(study)
    assert set(first) == set(trials[0])
    if study.search != "tpe":  # TPE's first draw is random; first_params takes the bounds
        assert first == trials[0]
    cfg = study.trial_config(first)
    assert cfg.seed == study.seeds[0]
    flat = cfg.to_flat()
    assert all(flat[key] == value for key, value in first.items() if key not in ("arm", "seed"))


def test_crc_losses_base_alone_is_incomplete_and_its_first_trial_is_not():
    study = load_study(Path("search_spaces/crc_losses.py"))
    with pytest.raises(ValueError, match=r"train\.loss = 'bce' is binary-only"):
        TrialConfig.from_dict(study.base)
    assert study.trial_config(study.first_params()).train.loss == "ce"


def test_relative_data_root_is_made_absolute_for_the_trials(tmp_path, monkeypatch):
    from tunelab.sweep import build_parser, study_from_args

    monkeypatch.chdir(tmp_path)
    space = tmp_path / "s.py"
    space.write_text("BASE = {'data.root': 'data/ebhi'}\nARMS = {'a': {}}\n")
    study = study_from_args(build_parser().parse_args([str(space)]))
    assert study.base["data.root"] == str(tmp_path / "data" / "ebhi")
    study = study_from_args(build_parser().parse_args([str(space), "--data", "other"]))
    assert study.base["data.root"] == str(tmp_path / "other")
