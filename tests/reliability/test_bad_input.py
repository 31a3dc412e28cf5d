"""Bad datasets and bad space files through the sweep command: each gives its documented
behaviour (skipped with a reason, or a clear error naming the path), never a bare traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image


def run_sweep(env: Path, space: Path, *options: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tunelab.sweep", str(space), "--storage", str(env / "runs")]
    command += ["--num-cpus", "2", "--quiet", *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.mark.e2e
def test_a_damaged_dataset_trains_on_what_is_usable_and_reports_the_rest(
    env, write_space, make_png_dataset
):
    root = make_png_dataset("ebhi", {"Alpha": 4, "Beta": 3}, name="my data set")  # spaces
    corrupt = root / "Alpha" / "image" / "A00-1-400-000.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    without_label = root / "Alpha" / "image" / "A01-1-400-000.png"
    (root / "Alpha" / "label" / "A01-1-400-000.png").unlink()
    without_image = root / "Beta" / "label" / "B00-1-400-000.png"
    (root / "Beta" / "image" / "B00-1-400-000.png").unlink()
    other_size = root / "Beta" / "label" / "B01-1-400-000.png"
    Image.new("L", (20, 20)).save(other_size)
    (root / "Gamma" / "image").mkdir(parents=True)
    (root / "Gamma" / "label").mkdir()
    space = write_space("ARMS = {'a': {}}\nSEEDS = [0]\n", epochs=1)
    out = run_sweep(env, space, "--data", str(root))
    assert out.returncode == 0, out.stderr
    client = MlflowClient(f"sqlite:///{env / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny").experiment_id
    (run,) = client.search_runs([experiment], "tags.`tunelab.role` = 'trial'")
    report_file = client.download_artifacts(run.info.run_id, "data_report.json", str(env))
    reasons = dict(map(tuple, json.loads(Path(report_file).read_text())["skipped"]))
    assert reasons[str(corrupt)].startswith("unreadable or corrupt")
    assert reasons[str(without_label)].startswith("image without label")
    assert reasons[str(without_image)].startswith("label without image")
    assert reasons[str(other_size)].startswith("label size 20x20 differs from image size 40x40")
    assert "empty class folder 'Gamma'" in reasons[str(root / "Gamma" / "image")]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root, "does not exist"),
        (lambda root: root.mkdir() or root, "no dataset found"),
        (
            lambda root: (root / "images").mkdir(parents=True) or (root / "masks").mkdir() or root,
            "no usable image/label pair",
        ),
    ],
    ids=["missing folder", "no layout", "no images"],
)
@pytest.mark.parametrize("flag", ["--data", "--test-data"])
def test_an_unusable_dataset_stops_before_any_trial(
    env, write_space, sweep, capsys, make, message, flag
):
    root = make(env / "data folder")
    code = sweep(write_space("ARMS = {'a': {}}\nSEEDS = [0]\n"), flag, str(root))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: cannot use the dataset") and message in err
    if flag == "--test-data":  # the external test set's own error, named as such
        assert "data.test_root (--test-data)" in err
    assert str(root) in err and "Traceback" not in err
    assert not (env / "runs").exists()


INVALID = "error: invalid search space {space}:\n  "  # then one line per problem


@pytest.mark.parametrize(
    ("body", "head", "message"),
    [
        # the body is the file's line 2, after write_space's BASE
        ("ARMS = {'a': {}\n", "error: {space}:2: syntax error: ", "'{' was never closed"),
        (
            "ARMS = {'a': {'model.dropuot': 0.1}}\n",
            INVALID + "ARMS['a']: unknown key 'model.dropuot'",
            "did you mean 'model.dropout'",
        ),
        (
            "ARMS = {'a': {'train.lr': 'fast'}}\n",
            INVALID + "ARMS['a']: ",
            "train.lr = 'fast' is invalid",
        ),
        (
            "ARMS = {'a': {'model.depth': 6}}\n",
            INVALID + "ARMS['a']: ",
            "smaller than 2**model.depth",
        ),
        (
            "from ray import tune\nSPACE = {'train.loss': tune.grid_search([])}\n",
            INVALID + "SPACE: ",
            "tune.grid_search([]) is empty",
        ),
    ],
    ids=["syntax", "unknown key", "wrong type", "impossible combination", "empty grid"],
)
def test_a_wrong_space_file_fails_fast_and_starts_nothing(env, write_space, body, head, message):
    space = write_space(body)  # the tiny trial is 32 x 32 pixels: depth 6 cannot fit
    started = time.perf_counter()
    out = run_sweep(env, space)
    elapsed = time.perf_counter() - started
    assert out.returncode == 2
    # the file (and a syntax error's line) first, then the setting each problem is in
    assert out.stderr.startswith(head.replace("{space}", str(space))), out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (env / "runs").exists()
    print(f"failed in {elapsed:.2f} s")  # measured for BENCHMARKS.md, never asserted
