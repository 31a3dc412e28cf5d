"""Shared fixtures: `make_png_dataset` writes tiny PNG datasets, so data tests read no real data;
`env`, `write_space` and `sweep` run tiny sweeps in a temporary folder; `gates` holds their
trials where a test needs them (held_trials.py); `mlflow_service` starts MLflow's server or UI
on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from held_trials import TrialGates
from hypothesis import settings
from PIL import Image

# Hypothesis fails an example that takes over 200 ms by default: a timing assertion that a busy
# 2-core machine breaks. Examples here do real work (fits, tensor ops); speed is for bench/.
settings.register_profile("tunelab", deadline=None)
settings.load_profile("tunelab")


def write_pair(image_path: Path, label_path: Path, rng: np.random.Generator, size: int) -> None:
    """An RGB image and its 0/255 label: a random rectangle, drawn dark on pale background."""
    label = np.zeros((size, size), np.uint8)
    y0, x0 = rng.integers(0, size // 2, 2)
    label[y0 : y0 + size // 2, x0 : x0 + size // 2] = 255
    grey = np.where(label > 0, 60, 220) + rng.integers(0, 20, (size, size))
    rgb = np.stack([grey, grey * 0.8, grey * 0.9], axis=-1).astype(np.uint8)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, "RGB").save(image_path)
    Image.fromarray(label, "L").save(label_path)


@pytest.fixture
def make_png_dataset(tmp_path: Path) -> Callable[..., Path]:
    """make(layout, classes, cases, per_case, size, name) -> root of a fresh PNG dataset.

    layout: "ebhi" (<class>/image + <class>/label), "generic" (images/ + masks/, flat, one class)
    or "generic-classes" (images/<class>/ + masks/<class>/). File names are
    `<CLASS LETTER><case>-1-400-<k>.png`, so case ids are e.g. "A03".
    """

    def make(
        layout: str = "ebhi",
        classes: dict[str, int] | None = None,  # class name -> number of cases
        per_case: int = 3,
        size: int = 40,
        name: str = "data",
        seed: int = 0,
    ) -> Path:
        root = tmp_path / name
        rng = np.random.default_rng(seed)
        for class_name, cases in (classes or {"Alpha": 4, "Beta": 3}).items():
            for case in range(cases):
                for k in range(per_case):
                    stem = f"{class_name[0].upper()}{case:02d}-1-400-{k:03d}"
                    image, label = _pair_paths(root, layout, class_name, stem)
                    write_pair(image, label, rng, size)
        return root

    return make


def _pair_paths(root: Path, layout: str, class_name: str, stem: str) -> tuple[Path, Path]:
    folders = {
        "ebhi": (root / class_name / "image", root / class_name / "label"),
        "generic": (root / "images", root / "masks"),
        "generic-classes": (root / "images" / class_name, root / "masks" / class_name),
    }
    image_dir, label_dir = folders[layout]
    return image_dir / f"{stem}.png", label_dir / f"{stem}.png"


# `bash tests/stress.sh fast` sets this: the tiny trial shrinks to 16 px and 2 levels, so that
# trials are as fast as the machine makes them, and a test that races them rather than holding
# them (held_trials.py) fails there
FAST_TRIALS = os.environ.get("TUNELAB_FAST_TRIALS") == "1"


@pytest.fixture(scope="session")
def tiny_trial() -> dict[str, object]:
    """Overrides for a trial that trains in about a second: 40 synthetic images, 32 px, 4 ch.

    fp32, not the default `auto`: the project's VMs differ in CPU (bf16 or not), and a test's
    numbers must not depend on which one it lands on.
    """
    return {
        "train.precision": "fp32",
        "data.synthetic_images": 40,
        "data.input_size": 16 if FAST_TRIALS else 32,
        "model.depth": 2 if FAST_TRIALS else 3,
        "model.base_channels": 4,
        "train.lr": 1e-3,
        "train.batch_size": 8,
        "train.max_epochs": 2,
    }


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary folder holding the data cache and the MLflow store of one test's sweeps."""
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("RAY_DEDUP_LOGS", "1")
    return tmp_path


@pytest.fixture
def write_space(env: Path, tiny_trial: dict[str, object]) -> Callable[..., Path]:
    """Write a space file `tiny.py` with the tiny trial as BASE, followed by `body`."""

    def write(body: str, epochs: int = 2) -> Path:
        path = env / "tiny.py"
        path.write_text(f"BASE = {{**{tiny_trial!r}, 'train.max_epochs': {epochs}}}\n{body}")
        return path

    return write


@pytest.fixture
def sweep(env: Path) -> Callable[..., int]:
    """sweep(space, *options): the sweep CLI in this process on a local 2-CPU Ray instance,
    storing under `env`/runs."""
    from tunelab.sweep import main

    def run(space: Path, *options: str) -> int:
        storage = ["--storage", str(env / "runs"), "--num-cpus", "2", "--quiet"]
        return main([str(space), *storage, *options])

    return run


def complete_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (Ray's `result.json`) without a last line that is still
    being written: only lines that end in a newline count."""
    text = path.read_text() if path.is_file() else ""
    return [json.loads(line) for line in text.split("\n")[:-1] if line]


@pytest.fixture
def records() -> Callable[[Path], list[dict[str, Any]]]:
    """records(path): a trial's `result.json` as Ray has written it so far, whole lines only."""
    return complete_records


@pytest.fixture
def gates(tmp_path: Path) -> Iterator[TrialGates]:
    """Gates for the trials of this test's sweeps; the test fails if a trial gave up at one."""
    trial_gates = TrialGates(tmp_path / "gates")
    yield trial_gates
    assert not trial_gates.failures(), trial_gates.failures()


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on when asked, for a server the test starts
    (another process could take it in between: a server that then cannot bind fails loudly)."""
    return _unused_port()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that refuses connections: bound by the test and never listened
    on, so nothing else can take it while the test runs."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PortTaken(RuntimeError):
    """A server could not bind its port: another process took it first."""


class MlflowServices:
    """MLflow servers or UIs on 127.0.0.1, each started answering /health."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def __call__(self, command: str, *args: str, port: int = 0) -> str:
        """start("server" | "ui", *args, port=0 for a free one) -> the URL."""
        if port:
            return self._start(command, args, port)
        for _ in range(2):  # a port taken between choosing it and the server binding it
            try:
                return self._start(command, args, _unused_port())
            except PortTaken:
                continue
        return self._start(command, args, _unused_port())

    def _start(self, command: str, args: tuple[str, ...], port: int) -> str:
        log = self.logs / f"mlflow-{command}-{port}-{len(self.processes)}.log"
        address = ["--host", "127.0.0.1", "--port", str(port)]
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", command, *address, *args],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: see stop()
        )
        self.processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                if "address already in use" in log.read_text().lower():
                    raise PortTaken(port)
                pytest.fail(f"mlflow {command} exited:\n{log.read_text()}")
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1).close()
                return url
            except OSError:
                assert time.monotonic() < deadline, f"mlflow {command} did not start in 90 s"
                time.sleep(0.5)

    def stop(self) -> None:
        """Stop every process of each server's group: MLflow 3's server starts job consumers
        (huey) that outlive it when only the server is signalled, and would keep taking CPU
        from the rest of the suite."""
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # whatever ignored the SIGTERM
        self.processes.clear()


@pytest.fixture
def mlflow_service(tmp_path: Path) -> Iterator[MlflowServices]:
    """Start MLflow's server or UI on loopback; all stopped when the test ends."""
    services = MlflowServices(tmp_path)
    yield services
    services.stop()
