"""A sweep folder's saved Ray state: checked before `--resume`, moved aside by a new start.

Ray's `Tuner.restore` has a silent fallback: when it cannot read the newest experiment state
it logs "Failed to restore the run state. Restarting experiment." and starts every trial again
under new ids, exit code 0, the old trial folders left beside the new ones. That state file is
rewritten by a copy that truncates it first, so a driver killed during the copy (an OOM kill, a
preemption, a lost head) leaves it empty. tunelab refuses to resume from such a folder and says
what to do; it never restarts on the user's behalf. Rebuilding Ray's trial, scheduler and
searcher state from the trial folders would mean writing Ray's private formats, which change
between releases.
"""

from __future__ import annotations

import json
import logging
import pickle
import pickletools
import shutil
import time
from pathlib import Path

# the files `Tuner.restore` reads (Ray's names; the newest of each pattern wins, by name)
EXPERIMENT_STATE = "experiment_state-*.json"  # trials, their checkpoints, the scheduler
SEARCH_STATE = "basic-variant-state-*.json"  # which configurations were generated (a pickle)
# a sampler's state (SEARCH = "tpe"): the wrappers' (repeat groups, concurrency; a pickle) and
# Optuna's study; written by separate copies, so a SIGKILL can leave them out of step
GENERATOR_STATE = "search_gen_state-*.json"
SAMPLER_STATE = "searcher-state-*.pkl"
TUNER_FILE = "tuner.pkl"  # the Tuner's settings, written once at the start
SUPERSEDED_FOLDER = "superseded"  # earlier sweeps of the same name, moved aside by a new start

# what Ray logs before it falls back to a fresh start (ray/tune/execution/tune_controller.py)
RESTORE_FAILED = "Failed to restore the run state"

log = logging.getLogger(__name__)


class ResumeError(RuntimeError):
    """The sweep cannot be resumed; the message says what is damaged and what to do."""


def saved_trial_ids(sweep_dir: Path) -> list[str]:
    """The ids of the trials Ray saved in `sweep_dir`, after checking every file it restores
    from; raises ResumeError naming the damaged file."""
    start_over = start_over_hint(sweep_dir)
    state = _newest(sweep_dir, EXPERIMENT_STATE)
    if state is None:
        raise ResumeError(
            f"cannot resume {sweep_dir}: it holds no Ray experiment state ({EXPERIMENT_STATE}); "
            f"the sweep was stopped before Ray first saved it. {start_over}"
        )
    trial_ids = _trial_ids(state, start_over)
    search = _newest(sweep_dir, SEARCH_STATE)
    if search is not None:
        _check_pickle(search, start_over)
    generator = _newest(sweep_dir, GENERATOR_STATE)
    if generator is not None:
        _check_sampler(generator, _newest(sweep_dir, SAMPLER_STATE), trial_ids, start_over)
    _check_pickle(sweep_dir / TUNER_FILE, start_over)
    return trial_ids


def _check_sampler(
    generator: Path, sampler: Path | None, trial_ids: list[str], start_over: str
) -> None:
    """The sampler's saved state must know exactly the trials the experiment state lists, and
    Optuna's study one trial per configuration: otherwise Ray would restore trials the sampler
    has never seen (a crash when they end) or wait forever for ones it will not restore."""
    _check_pickle(generator, start_over)
    if sampler is None:
        raise ResumeError(f"cannot resume: no {SAMPLER_STATE} beside {generator}. {start_over}")
    _check_pickle(sampler, start_over)
    with generator.open("rb") as file:
        groups = pickle.load(file).get("name:Replicates", {}).get("_trial_id_to_group", {})
    with sampler.open("rb") as file:
        told = len(pickle.load(file)["_ot_study"].trials)
    configurations = len({id(group) for group in groups.values()})
    if set(groups) != set(trial_ids) or told != configurations:
        raise ResumeError(
            f"cannot resume: the sampler's saved state ({generator.name}: {len(groups)} trials "
            f"in {configurations} configurations; {sampler.name}: {told} configurations) is "
            f"out of step with the {len(trial_ids)} trials Ray saved (the driver was killed "
            f"between its writes). {start_over}"
        )


def start_over_hint(sweep_dir: Path) -> str:
    return (
        "The trial folders and checkpoints are untouched, but Ray cannot continue them without "
        "its state. To run the sweep again from the start, use the same command without "
        f"--resume: the old folders are then moved to {sweep_dir / SUPERSEDED_FOLDER}/."
    )


def _newest(folder: Path, pattern: str) -> Path | None:
    matches = sorted(folder.glob(pattern))  # a session's timestamp in the name, as Ray sorts
    return matches[-1] if matches else None


def _trial_ids(state: Path, start_over: str) -> list[str]:
    trials = _read_json(state, start_over).get("trial_data")
    if not trials:
        raise ResumeError(
            f"cannot resume: {state} holds no trials (the driver was probably killed while "
            f"Ray wrote it). {start_over}"
        )
    try:
        return [json.loads(trial)["trial_id"] for trial, _ in trials]
    except (TypeError, ValueError, KeyError) as error:
        raise ResumeError(f"cannot resume: {state} has an unreadable trial ({error}).") from None


def _read_json(path: Path, start_over: str) -> dict:
    text = path.read_text()
    if not text.strip():
        raise ResumeError(
            f"cannot resume: {path} is empty (the driver was probably killed while Ray "
            f"rewrote it). {start_over}"
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ResumeError(
            f"cannot resume: {path} is cut short or corrupt ({error}; {len(text)} bytes). "
            f"{start_over}"
        ) from None


def _check_pickle(path: Path, start_over: str) -> None:
    """Walks the pickle's opcodes without running any: a file cut short has no final STOP."""
    if not path.is_file():
        raise ResumeError(f"cannot resume: {path} is missing. {start_over}")
    if path.stat().st_size == 0:
        raise ResumeError(f"cannot resume: {path} is empty. {start_over}")
    try:
        for _ in pickletools.genops(path.read_bytes()):
            pass
    except ValueError as error:
        message = f"cannot resume: {path} is cut short or corrupt ({error}). {start_over}"
        raise ResumeError(message) from None


def move_aside(sweep_dir: Path) -> Path | None:
    """Move what an earlier sweep left in `sweep_dir` to `superseded/<time>/`, so that nothing
    (Ray's restore, results, analysis) takes its trial folders for this sweep's; returns the
    folder it moved them to, or None when there was nothing."""
    if not sweep_dir.is_dir():
        return None
    earlier = [path for path in sweep_dir.iterdir() if path.name != SUPERSEDED_FOLDER]
    if not earlier:
        return None
    target = sweep_dir / SUPERSEDED_FOLDER / time.strftime("%Y-%m-%d_%H-%M-%S")
    while target.exists():  # two starts within a second
        target = target.with_name(target.name + "+")
    target.mkdir(parents=True)
    for path in earlier:
        shutil.move(path, target / path.name)
    log.warning(
        "%s held an earlier sweep of this name; moved it to %s (use --resume to continue a "
        "sweep instead of starting it again)",
        sweep_dir,
        target,
    )
    return target


class RestoreFailureIsAnError(logging.Filter):
    """Turns Ray's restore fallback into an exception instead of a fresh start.

    Installed on Ray's controller logger for a resume: the exception leaves the `except` block
    Ray logs from, so `Tuner.fit` raises before any trial runs. A second line of defence
    behind `saved_trial_ids`, for failures it cannot see (e.g. a state naming missing files).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(RESTORE_FAILED):
            detail = f": {record.exc_info[1]}" if record.exc_info else ""
            raise ResumeError(f"Ray could not restore the sweep's saved state{detail}.")
        return True
