"""Trials that wait where a test needs them, and sweep drivers run as subprocesses.

A test that must catch a sweep in a given state (a trial mid-way, some trials finished and the
others not, every trial alive at once) holds its trials there instead of racing them, so the
machine's speed cannot decide what it sees. Trials run in Ray worker processes, out of a test's
reach, so the gate travels with the trainable: the driver's `tunelab.runner.train_trial` is
replaced by a wrapper that Ray pickles by value (no worker needs tests/ on its path, not even a
cluster node) and that, in the worker, waits at `tune.report` of a given epoch for a file the
test writes. tunelab itself holds no hook for it.

- `Hold`: trials wait before reporting an epoch until the test releases the hold. Everything
  they reported before, checkpoints included, has reached the driver.
- `Barrier`: each trial waits after reporting an epoch until `count` trials have: they are then
  all alive at once.

Both rest on Ray's function trainables reporting synchronously: `tune.report` returns only once
the driver has processed the result and asked for the next (ray/train/_internal/session.py,
`synchronous_result_reporting`). Why not a driver-side Tune callback that waits: it would stop
Tune's whole loop (no other trial's result taken, Ctrl+C acted on only once it returns), so it
could neither make trials overlap nor leave a held trial's sweep as responsive as a real one.

In the test's process: `TrialGates.installed`. A driver subprocess, which Ctrl+C and --resume
treat as `python -m tunelab.sweep`: `python tests/held_trials.py RULES.json SPACE [options]`,
as `TrialGates.command` writes it. Every wait, in the trials and in the tests, gives up after
WAIT_S, naming what it waited for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

WAIT_S = 300.0
POLL_S = 0.05
RELEASED = "released"


@dataclass(frozen=True)
class Hold:
    """Trials of `arms` (every trial when empty) wait before reporting `epoch` until the test
    calls `release(name)`, except the first `free` of them to get there."""

    name: str
    epoch: int
    arms: tuple[str, ...] = ()
    free: int = 0


@dataclass(frozen=True)
class Barrier:
    """Each trial waits after reporting `epoch` until `count` trials have reported it."""

    name: str
    epoch: int
    count: int


Rule = Hold | Barrier


class GateError(RuntimeError):
    """A trial gave up waiting at a gate (or another trial did)."""


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Whole or not at all: the test polls for the file while it is written."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(value))
    partial.replace(path)


@dataclass(frozen=True)
class TrialAtGate:
    """One trial, as the gates in its worker see it."""

    folder: Path
    trial_id: str
    arm: str
    node_id: str

    def hold(self, rule: Hold, epoch: int) -> None:
        if epoch != rule.epoch or (rule.arms and self.arm not in rule.arms):
            return
        place = self.folder / rule.name
        place.mkdir(parents=True, exist_ok=True)
        if (place / RELEASED).exists() or self._goes_free(place, rule.free):
            return
        held = {"trial_id": self.trial_id, "arm": self.arm, "epoch": epoch, "node": self.node_id}
        held["pid"] = os.getpid()  # the worker process: a test that kills it can see it gone
        _write_json(place / f"held-{self.trial_id}.json", held)
        self._wait(f"hold {rule.name!r}", lambda: (place / RELEASED).exists())

    def arrive(self, rule: Barrier, epoch: int) -> None:
        if epoch != rule.epoch:
            return
        place = self.folder / rule.name
        place.mkdir(parents=True, exist_ok=True)
        (place / f"arrived-{self.trial_id}").touch()
        self._wait(
            f"barrier {rule.name!r} of {rule.count} trials",
            lambda: len(list(place.glob("arrived-*"))) >= rule.count,
        )

    def _goes_free(self, place: Path, free: int) -> bool:
        """Takes one of the hold's `free` passes, atomically; a retried trial keeps its own."""
        mine = place / f"free-{self.trial_id}"
        if mine.exists():
            return True
        for k in range(free):
            try:
                os.close(os.open(place / f"pass-{k}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            mine.touch()
            return True
        return False

    def _wait(self, what: str, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT_S
        while not done():
            if given_up := sorted(self.folder.glob("gave-up-*")):
                raise GateError(f"{what}: {given_up[0].read_text()}")
            if time.monotonic() > deadline:
                message = f"trial {self.trial_id} ({self.arm}) waited {WAIT_S:.0f} s at {what}"
                (self.folder / f"gave-up-{self.trial_id}").write_text(message)
                raise GateError(message)
            time.sleep(POLL_S)


class GatedTune:
    """`ray.tune` as `tunelab.trainable` sees it in a gated trial: `report` waits at the gates."""

    def __init__(self, tune: Any, trial: TrialAtGate, rules: tuple[Rule, ...]) -> None:
        self._tune, self._trial, self._rules = tune, trial, rules

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tune, name)

    def report(self, metrics: dict[str, Any], **options: Any) -> None:
        epoch = int(metrics["epoch"])
        for rule in self._rules:
            if isinstance(rule, Hold):
                self._trial.hold(rule, epoch)
        self._tune.report(metrics, **options)  # returns once the driver has taken the result
        for rule in self._rules:
            if isinstance(rule, Barrier):
                self._trial.arrive(rule, epoch)


def gated_trial(folder: Path, rules: tuple[Rule, ...]) -> Callable[..., None]:
    """tunelab's trainable, run with its reports gated by `rules` (in the worker)."""

    def trial(params: dict[str, Any], study: Any, fingerprints: Any = None) -> None:
        import ray
        from ray import tune

        from tunelab import trainable

        trial_id, node = tune.get_context().get_trial_id(), ray.get_runtime_context().get_node_id()
        here = TrialAtGate(folder, trial_id, study.arm_label(params), node)
        # train_trial reports through its module's `tune`; a worker runs one trial at a time
        trainable.tune = GatedTune(tune, here, rules)
        try:
            trainable.train_trial(params, study, fingerprints)
        finally:
            trainable.tune = tune

    trial.__name__ = "train_trial"  # Ray resumes a sweep only with a trainable of the same name
    return trial


def _install(folder: Path, rules: tuple[Rule, ...]) -> Callable[..., None]:
    import ray.cloudpickle

    import tunelab.runner

    if __name__ != "__main__":  # the launcher's own module is pickled by value anyway
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # the runner builds the trainable from this name on every start and --resume
    previous = tunelab.runner.train_trial
    tunelab.runner.train_trial = gated_trial(folder, rules)
    return previous


def _rules_to_json(rules: tuple[Rule, ...]) -> str:
    return json.dumps([{"kind": type(r).__name__, **dataclasses.asdict(r)} for r in rules])


def _rules_from_json(text: str) -> tuple[Rule, ...]:
    kinds: dict[str, type[Hold] | type[Barrier]] = {"Hold": Hold, "Barrier": Barrier}
    rules: list[Rule] = []
    for fields in json.loads(text):
        kind = kinds[fields.pop("kind")]
        if "arms" in fields:
            fields["arms"] = tuple(fields["arms"])
        rules.append(kind(**fields))
    return tuple(rules)


class TrialGates:
    """The test's side: installs gates, sees which trials are held, releases them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def installed(self, *rules: Rule) -> Iterator[None]:
        """Sweeps run in this process gate their trials by `rules` inside the block."""
        previous = _install(self.folder, rules)
        try:
            yield
        finally:
            import tunelab.runner

            tunelab.runner.train_trial = previous

    def command(self, space: Path, *options: str, rules: tuple[Rule, ...]) -> list[str]:
        """The sweep CLI with its trials gated by `rules`, for a subprocess."""
        path = self.folder / f"rules-{time.monotonic_ns()}.json"
        path.write_text(_rules_to_json(rules))
        return [sys.executable, __file__, str(path), str(space), *options]

    def held(self, name: str) -> list[dict[str, Any]]:
        """The trials a hold has stopped so far: trial_id, arm, epoch, node, pid."""
        found = sorted((self.folder / name).glob("held-*.json"))
        return [json.loads(path.read_text()) for path in found]

    def release(self, name: str) -> None:
        (self.folder / name).mkdir(parents=True, exist_ok=True)
        (self.folder / name / RELEASED).touch()

    def failures(self) -> list[str]:
        return [path.read_text() for path in sorted(self.folder.glob("gave-up-*"))]


@dataclass
class Driver:
    """A sweep's driver process, its output in a file (not a pipe nobody reads meanwhile)."""

    process: subprocess.Popen[bytes]
    log: Path
    gates: TrialGates | None = None

    def wait_until(self, found: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
        """Poll `found` until it returns something true, while the sweep runs."""
        deadline = time.monotonic() + timeout_s
        while not (value := found()):
            failures = self.gates.failures() if self.gates else []
            assert not failures, f"waiting for {what}: {failures}\n{self.tail()}"
            assert self.process.poll() is None, f"the sweep ended before {what}:\n{self.tail()}"
            assert time.monotonic() < deadline, f"no {what} in {timeout_s:.0f} s:\n{self.tail()}"
            time.sleep(0.1)
        return value

    def end(self, timeout_s: float = 600) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the sweep did not end in {timeout_s:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def driver(command: list[str], log: Path, gates: TrialGates | None = None) -> Iterator[Driver]:
    """Run `command`; killed if still running when the block ends, however it ends."""
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield Driver(process, log, gates)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


if __name__ == "__main__":
    rules_file, *arguments = sys.argv[1:]
    _install(Path(rules_file).parent, _rules_from_json(Path(rules_file).read_text()))
    from tunelab.sweep import main

    raise SystemExit(main(arguments))
