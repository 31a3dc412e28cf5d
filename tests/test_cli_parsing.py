"""Every CLI takes its options anywhere: before, between and after its positionals, as users
type them; and each `--help` shows its description as whole sentences.

Each test runs the CLI's `main` in this process with the job replaced by a stub that records
what it was given: nothing trains, no Ray starts.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import analysis.__main__ as analysis_cli
import tunelab.predict.__main__ as predict_cli
from analysis.report import AnalysisError
from tunelab import sweep as sweep_cli
from tunelab import train as train_cli

# the command line: an option between SWEEP and IMAGES_DIR
PREDICT_LINES = [
    ["runs/losses", "--arm", "dice", "images/", "--out", "out/"],
    ["--arm", "dice", "--out", "out/", "runs/losses", "images/"],
    ["runs/losses", "images/", "--out", "out/", "--arm", "dice"],
    ["--out", "out/", "runs/losses", "--arm", "dice", "images/"],
]


@pytest.mark.parametrize("argv", PREDICT_LINES, ids=["between", "before", "after", "all"])
def test_predict_takes_options_anywhere(argv, monkeypatch):
    given = []
    monkeypatch.setattr(predict_cli, "predict", lambda args: given.append(args) or "done")
    assert predict_cli.main(argv) == 0
    (args,) = given
    assert (args.sweep, args.images, args.arm, args.out) == (
        "runs/losses",
        "images/",
        "dice",
        "out/",
    )


def test_predict_s_flags_between_positionals_and_an_absent_images_folder(monkeypatch):
    given = []
    monkeypatch.setattr(predict_cli, "predict", lambda args: given.append(args) or "done")
    argv = ["runs/x", "--probabilities", "--labels", "gt/", "images/", "--out", "o", "--overlay"]
    assert predict_cli.main(argv) == 0
    assert (given[0].sweep, given[0].images, given[0].labels) == ("runs/x", "images/", "gt/")
    assert given[0].probabilities and given[0].overlay
    assert predict_cli.main(["--out", "o", "runs/x", "--receptive-field"]) == 0
    assert (given[1].sweep, given[1].images, given[1].receptive_field) == ("runs/x", None, True)


@pytest.fixture
def space(tmp_path: Path) -> Path:
    path = tmp_path / "space.py"
    path.write_text("ARMS = {'a': {}, 'b': {'train.lr': 0.01}}\nSEEDS = [0]\n")
    return path


@pytest.mark.parametrize("where", ["before", "after", "both sides"])
def test_sweep_takes_options_before_and_after_the_space(where, space, monkeypatch):
    given: dict[str, Any] = {}

    def fake_run(study, options):  # the runner, without Ray
        given.update(study=study, options=options)
        return "done"

    monkeypatch.setattr("tunelab.runner.run_sweep", fake_run)
    first = ["--set", "train.max_epochs=5", "--seeds", "4,7"]
    second = ["--quiet", "--set", "train.batch_size=4", "--experiment", "paper"]
    argv = {
        "before": [*first, *second, str(space)],
        "after": [str(space), *first, *second],
        "both sides": [*first, str(space), *second],
    }[where]
    assert sweep_cli.main(argv) == 0
    study, options = given["study"], given["options"]
    assert study.path == space and study.seeds == (4, 7)
    assert (study.base["train.max_epochs"], study.base["train.batch_size"]) == (5, 4)
    assert (options.verbose, options.experiment) == (0, "paper")


@pytest.mark.parametrize("where", ["before", "after", "both sides"])
def test_analysis_takes_options_before_and_after_the_sweep(where, tmp_path, monkeypatch):
    given: dict[str, Any] = {}

    def fake_report(sweep, out, **choices):  # stops main once it has what the parse gave
        given.update(sweep=sweep, out=out, **choices)
        raise AnalysisError("stub")

    loaded = SimpleNamespace(identity={})  # a sweep folder as main reads it before the report
    monkeypatch.setattr(
        analysis_cli, "load_sweep", lambda folder: given.update(folder=folder) or loaded
    )
    monkeypatch.setattr(analysis_cli, "build_report", fake_report)
    first = ["--baseline", "bce", "--arm", "dice"]
    second = ["--split", "validation", "--bootstrap", "50", "--out", "tables", "--no-mlflow"]
    argv = {
        "before": [*first, *second, str(tmp_path)],
        "after": [str(tmp_path), *first, *second],
        "both sides": [*first, str(tmp_path), *second],
    }[where]
    assert analysis_cli.main(argv) == 2
    assert (
        given["folder"] == str(tmp_path) and given["sweep"] is loaded and given["out"] == "tables"
    )
    assert (given["baseline"], given["arm"], given["split"]) == ("bce", "dice", "validation")
    assert given["resamples"] == 50


def test_train_takes_its_options_in_any_order(tmp_path, monkeypatch):
    """`python -m tunelab.train` has no positionals: every order of its options is one parse."""
    given = []

    def fake_prepare(cfg):  # stops main before any data is read
        given.append(cfg)
        raise ValueError("stub")

    monkeypatch.setattr(train_cli, "prepare", fake_prepare)
    argv = ["--set", "train.max_epochs=3", "--seed", "4", "--data", str(tmp_path)]
    argv += ["--set", "train.lr=0.01"]
    with pytest.raises(SystemExit) as exited:
        train_cli.main(argv)
    assert exited.value.code == 2
    (cfg,) = given
    assert (cfg.seed, cfg.data.root, cfg.train.max_epochs, cfg.train.lr) == (
        4,
        str(tmp_path),
        3,
        0.01,
    )


def description(main: Any, capsys: pytest.CaptureFixture[str]) -> str:
    """The description paragraph of a CLI's --help (after the usage), whitespace joined."""
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split("\n\n")[1].split())


@pytest.mark.parametrize(
    "main", [predict_cli.main, sweep_cli.main, analysis_cli.main, train_cli.main]
)
def test_help_describes_in_whole_sentences(main, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    text = description(main, capsys)
    assert text.endswith(".") and text.count("(") == text.count(")"), text


def test_predict_s_help_keeps_its_whole_first_paragraph(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    text = description(predict_cli.main, capsys)
    assert "segment new images with an arm's models, ensembled over its seeds and folds" in text
    assert text.endswith("and (with --labels) score them."), text
