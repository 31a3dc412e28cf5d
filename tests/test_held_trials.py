"""The gates that hold trials for the end-to-end tests (held_trials.py), without Ray: trials are
threads here, and a fake `tune` records what reached the driver. A gate that did not hold would
let those tests race their trials again, and pass or fail by the machine's speed."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import held_trials
from held_trials import Barrier, GatedTune, GateError, Hold, TrialAtGate, TrialGates

SOON_S = 10.0  # a generous bound on what a thread does next, never a duration asserted on


class FakeTune:
    """What the driver has received: (trial, epoch), in order."""

    def __init__(self) -> None:
        self.reported: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def report(self, metrics: dict, trial: str = "") -> None:
        with self.lock:
            self.reported.append((trial, metrics["epoch"]))


def run_trial(gates: TrialGates, tune: FakeTune, name: str, arm: str, rules, epochs: int):
    """A trial in a thread: reports `epochs` epochs through the gates."""
    here = TrialAtGate(gates.folder, name, arm, node_id="node-1")
    gated = GatedTune(tune, here, tuple(rules))
    errors: list[BaseException] = []

    def epochs_of_training() -> None:
        try:
            for epoch in range(1, epochs + 1):
                gated.report({"epoch": epoch}, trial=name)
        except GateError as error:
            errors.append(error)

    thread = threading.Thread(target=epochs_of_training, daemon=True)
    thread.start()
    return thread, errors


def eventually(condition, what: str) -> None:
    deadline = time.monotonic() + SOON_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_hold_stops_a_trial_before_its_epoch_until_released(tmp_path):
    gates, tune = TrialGates(tmp_path), FakeTune()
    hold = Hold("h", epoch=2, arms=("a",))
    held, _ = run_trial(gates, tune, "t1", "a", [hold], epochs=3)
    other_arm, _ = run_trial(gates, tune, "t2", "b", [hold], epochs=3)
    eventually(lambda: gates.held("h"), "t1 held")
    other_arm.join(SOON_S)
    assert not other_arm.is_alive()  # another arm's trial is not held
    assert gates.held("h") == [
        {"trial_id": "t1", "arm": "a", "epoch": 2, "node": "node-1", "pid": os.getpid()}
    ]
    assert ("t1", 1) in tune.reported and ("t1", 2) not in tune.reported
    gates.release("h")
    held.join(SOON_S)
    assert [epoch for trial, epoch in tune.reported if trial == "t1"] == [1, 2, 3]


def test_the_first_free_trials_go_on_and_the_others_are_held(tmp_path):
    gates, tune = TrialGates(tmp_path), FakeTune()
    hold = Hold("h", epoch=1, free=2)
    trials = [run_trial(gates, tune, f"t{k}", "a", [hold], epochs=1)[0] for k in range(3)]
    eventually(lambda: len(tune.reported) == 2 and gates.held("h"), "2 free, 1 held")
    (held,) = gates.held("h")
    assert held["trial_id"] not in {trial for trial, _ in tune.reported}
    gates.release("h")
    for thread in trials:
        thread.join(SOON_S)
    assert len(tune.reported) == 3


def test_a_barrier_lets_trials_on_once_all_have_reported(tmp_path):
    gates, tune = TrialGates(tmp_path), FakeTune()
    barrier = Barrier("b", epoch=1, count=3)
    first, _ = run_trial(gates, tune, "t0", "a", [barrier], epochs=2)
    second, _ = run_trial(gates, tune, "t1", "a", [barrier], epochs=2)
    eventually(lambda: len(tune.reported) == 2, "both report epoch 1")
    assert sorted(tune.reported) == [("t0", 1), ("t1", 1)]  # and wait there
    third, _ = run_trial(gates, tune, "t2", "a", [barrier], epochs=2)
    for thread in (first, second, third):
        thread.join(SOON_S)
    epochs = [epoch for _, epoch in tune.reported]
    assert sorted(epochs[:3]) == [1, 1, 1] and epochs[3:] == [2, 2, 2]


def test_a_gate_gives_up_naming_what_it_waited_for_and_the_others_follow(tmp_path, monkeypatch):
    monkeypatch.setattr(held_trials, "WAIT_S", 0.2)
    gates, tune = TrialGates(tmp_path), FakeTune()
    waiting, errors = run_trial(gates, tune, "t1", "a", [Hold("never", epoch=1)], epochs=1)
    waiting.join(SOON_S)
    assert [str(e) for e in errors] == ["trial t1 (a) waited 0 s at hold 'never'"]
    assert gates.failures() == ["trial t1 (a) waited 0 s at hold 'never'"]
    monkeypatch.setattr(held_trials, "WAIT_S", 60.0)  # the next one does not wait for its own
    late, errors = run_trial(gates, tune, "t2", "a", [Barrier("b", epoch=1, count=2)], epochs=1)
    late.join(SOON_S)
    assert "barrier 'b' of 2 trials: trial t1 (a) waited" in str(errors[0])
    assert tune.reported == [("t2", 1)]


def test_rules_travel_to_a_driver_subprocess_unchanged(tmp_path):
    rules = (Hold("h", epoch=3, arms=("long", "longer"), free=1), Barrier("b", epoch=1, count=4))
    command = TrialGates(tmp_path).command(Path("space.py"), "--quiet", rules=rules)
    assert command[1] == held_trials.__file__ and command[3:] == ["space.py", "--quiet"]
    assert held_trials._rules_from_json(Path(command[2]).read_text()) == rules
