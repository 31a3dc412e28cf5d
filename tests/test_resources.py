"""RESOURCES in a space: what the file gives is what each trial reserves, on any machine; only
an absent "gpu" takes the machine's default (one per trial where Ray sees GPUs, else none).

The runner learns the machine's GPUs from `ray.cluster_resources()`; these tests replace it, so
no Ray instance starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from tunelab.runner import SweepOptions, _resources, _trainable, _trial_slots
from tunelab.space import SpaceError, load_study
from tunelab.sweep import build_parser, study_from_args

GPU_MACHINE = {"CPU": 16.0, "GPU": 2.0}
CPU_MACHINE = {"CPU": 16.0}


def options(gpus_per_trial: float | None = None) -> SweepOptions:
    return SweepOptions(
        storage="/tmp/runs",
        address=None,
        resume=False,
        gpus_per_trial=gpus_per_trial,
        max_failures=1,
        num_cpus=None,
        verbose=0,
        mlflow_uri="sqlite:///mlflow.db",
        experiment=None,
        log_model=False,
    )


@pytest.fixture
def space_with(tmp_path: Path):
    """space_with(resources_line, *flags): the study of a one-arm space, through the CLI's
    parser; resources_line is the file's RESOURCES line, or "" for none."""

    def study(resources_line: str, *flags: str):
        path = tmp_path / "s.py"
        path.write_text(f"ARMS = {{'a': {{}}}}\nSEEDS = [0]\n{resources_line}\n")
        return study_from_args(build_parser().parse_args([str(path), *flags]))

    return study


def on_machine(monkeypatch: pytest.MonkeyPatch, machine: dict[str, float]) -> None:
    monkeypatch.setattr(ray, "cluster_resources", lambda: dict(machine))


def test_without_resources_a_trial_takes_one_gpu_where_there_are_gpus(space_with, monkeypatch):
    study = space_with("")
    on_machine(monkeypatch, GPU_MACHINE)
    assert _resources(study, options()) == {"cpu": 1.0, "gpu": 1.0}
    on_machine(monkeypatch, CPU_MACHINE)
    assert _resources(study, options()) == {"cpu": 1.0, "gpu": 0.0}


def test_a_file_s_cpus_are_kept_and_its_absent_gpu_takes_the_machine_s(space_with, monkeypatch):
    study = space_with("RESOURCES = {'cpu': 2}")
    on_machine(monkeypatch, GPU_MACHINE)
    assert _resources(study, options()) == {"cpu": 2.0, "gpu": 1.0}
    # 16 CPUs / 2 = 8 slots, 2 GPUs / 1 = 2: the GPUs limit it
    assert _trial_slots(_resources(study, options())) == 2
    on_machine(monkeypatch, CPU_MACHINE)
    assert _resources(study, options()) == {"cpu": 2.0, "gpu": 0.0}


def test_an_explicit_gpu_0_keeps_the_study_on_the_cpus_of_a_gpu_machine(space_with, monkeypatch):
    study = space_with("RESOURCES = {'cpu': 1, 'gpu': 0}")
    on_machine(monkeypatch, GPU_MACHINE)
    assert _resources(study, options()) == {"cpu": 1.0, "gpu": 0.0}
    # what Ray reserves: no GPU at all, and the 16 CPUs (not the 2 GPUs) set the trial slots
    assert _trainable(study, options())._resources.required_resources == {"CPU": 1.0}
    assert _trial_slots(_resources(study, options())) == 16


def test_a_fractional_gpu_in_the_file_is_kept(space_with, monkeypatch):
    on_machine(monkeypatch, GPU_MACHINE)
    study = space_with("RESOURCES = {'cpu': 3, 'gpu': 0.25}")
    assert _resources(study, options()) == {"cpu": 3.0, "gpu": 0.25}
    assert _trainable(study, options())._resources.required_resources == {
        "CPU": 3.0,
        "GPU": 0.25,
    }


def test_gpus_per_trial_overrides_the_file_and_the_machine_s_default(space_with, monkeypatch):
    on_machine(monkeypatch, GPU_MACHINE)
    told = space_with("RESOURCES = {'cpu': 1, 'gpu': 0}", "--gpus-per-trial", "0.5")
    assert _resources(told, options(0.5)) == {"cpu": 1.0, "gpu": 0.5}
    kept_off = space_with("", "--gpus-per-trial", "0")
    assert _resources(kept_off, options(0.0)) == {"cpu": 1.0, "gpu": 0.0}


def test_resources_with_an_unknown_key_or_a_negative_value_are_refused(tmp_path):
    path = tmp_path / "s.py"
    for bad in ("{'cpu': 1, 'tpu': 1}", "{'gpu': -1}"):
        path.write_text(f"ARMS = {{'a': {{}}}}\nRESOURCES = {bad}\n")
        with pytest.raises(SpaceError, match=r"RESOURCES = .*expected"):
            load_study(path)
