"""The checks before --resume and the move aside on a new start, on hand-made sweep folders."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import pytest

from tunelab.resume import (
    RestoreFailureIsAnError,
    ResumeError,
    move_aside,
    saved_trial_ids,
)

SESSION = "2026-12-04_10-00-00"


def saved_sweep(folder: Path, trial_ids: list[str], session: str = SESSION) -> Path:
    """The three files Ray restores from, in the shapes Ray writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    trials = [[json.dumps({"trial_id": trial_id, "stub": False}), "{}"] for trial_id in trial_ids]
    state = {"trial_data": trials, "runner_data": {}, "stats": {"start_time": 0.0}}
    (folder / f"experiment_state-{session}.json").write_text(json.dumps(state))
    (folder / f"basic-variant-state-{session}.json").write_bytes(pickle.dumps({"seen": 4}))
    (folder / "tuner.pkl").write_bytes(pickle.dumps({"settings": [1, 2, 3]}))
    return folder


def test_an_intact_state_gives_its_trial_ids(tmp_path):
    sweep = saved_sweep(tmp_path / "tiny", ["ab_00000", "ab_00001"])
    assert saved_trial_ids(sweep) == ["ab_00000", "ab_00001"]


def test_the_newest_session_is_the_one_checked(tmp_path):
    sweep = saved_sweep(tmp_path / "tiny", ["old_00000"], session="2026-12-01_09-00-00")
    saved_sweep(sweep, ["new_00000"], session="2026-12-04_09-00-00")
    assert saved_trial_ids(sweep) == ["new_00000"]
    (sweep / "experiment_state-2026-12-04_09-00-00.json").write_text("")
    with pytest.raises(ResumeError, match=r"experiment_state-2026-12-04_09-00-00\.json is empty"):
        saved_trial_ids(sweep)  # an older, intact session does not stand in for the newest


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda state: state.write_text(""), "is empty"),
        (lambda state: state.write_text(state.read_text()[:40]), "is cut short or corrupt"),
        (lambda state: state.write_text('{"trial_data": []}'), "holds no trials"),
        (lambda state: state.write_text('{"trial_data": [["{}", "{}"]]}'), "unreadable trial"),
    ],
)
def test_a_damaged_experiment_state_is_refused_naming_the_file(tmp_path, damage, message):
    sweep = saved_sweep(tmp_path / "tiny", ["ab_00000"])
    state = sweep / f"experiment_state-{SESSION}.json"
    damage(state)
    with pytest.raises(ResumeError, match=message) as refused:
        saved_trial_ids(sweep)
    assert str(state) in str(refused.value)
    if message != "unreadable trial":  # what to do is said wherever the file is unusable
        assert "without --resume" in str(refused.value)


@pytest.mark.parametrize("name", [f"basic-variant-state-{SESSION}.json", "tuner.pkl"])
@pytest.mark.parametrize("keep", [0, 10])  # empty, or cut after 10 bytes
def test_a_damaged_pickle_is_refused_naming_the_file(tmp_path, name, keep):
    sweep = saved_sweep(tmp_path / "tiny", ["ab_00000"])
    path = sweep / name
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(ResumeError, match=r"is empty|cut short") as refused:
        saved_trial_ids(sweep)
    assert str(path) in str(refused.value)


def test_a_folder_without_state_or_tuner_is_refused(tmp_path):
    sweep = tmp_path / "tiny"
    sweep.mkdir()
    with pytest.raises(ResumeError, match="holds no Ray experiment state"):
        saved_trial_ids(sweep)
    saved_sweep(sweep, ["ab_00000"])
    (sweep / "tuner.pkl").unlink()
    with pytest.raises(ResumeError, match=r"tuner\.pkl is missing"):
        saved_trial_ids(sweep)


def test_a_new_start_moves_every_earlier_entry_aside(tmp_path):
    sweep = saved_sweep(tmp_path / "tiny", ["ab_00000"])
    (sweep / "a_s0_ab_00000").mkdir()
    (sweep / "a_s0_ab_00000" / "result.json").write_text('{"epoch": 1}\n')
    (sweep / "results.parquet").write_bytes(b"stale")
    before = sorted(path.name for path in sweep.iterdir())
    first = move_aside(sweep)
    assert first is not None and first.parent == sweep / "superseded"
    assert sorted(path.name for path in first.iterdir()) == before
    assert [path.name for path in sweep.iterdir()] == ["superseded"]
    assert (first / "a_s0_ab_00000" / "result.json").read_text() == '{"epoch": 1}\n'
    assert not list(sweep.glob("*/result.json"))  # nothing there reads as a live trial

    (sweep / "tunelab.json").write_text("{}")  # a second restart, within the same second
    second = move_aside(sweep)
    assert second is not None and second != first and second.parent == first.parent
    assert [path.name for path in second.iterdir()] == ["tunelab.json"]
    assert sorted(path.name for path in first.iterdir()) == before  # the first move is kept


def test_nothing_to_move_aside(tmp_path):
    assert move_aside(tmp_path / "absent") is None
    (tmp_path / "empty").mkdir()
    assert move_aside(tmp_path / "empty") is None


def test_ray_s_restore_fallback_raises_instead_of_restarting():
    controller_log = logging.getLogger("tests.resume.controller")
    controller_log.addFilter(RestoreFailureIsAnError())
    controller_log.warning("Restoring the run from the latest experiment state file")  # passes
    # as Ray's TuneController logs it, from inside the `except` around its resume
    with pytest.raises(ResumeError, match="could not restore the sweep's saved state: bad"):
        try:
            raise RuntimeError("bad")
        except RuntimeError:
            controller_log.exception("Failed to restore the run state.")
