"""Running on a Ray cluster.

ray_cluster.yaml goes through the checks `ray up` makes before it touches a machine, and a broken
copy does not. A sweep on a real multi-node Ray cluster (a head and worker nodes, each with its own
raylet and resources, on this machine; a temporary folder plays the shared NFS storage) spreads
its trials over the nodes, survives losing a node mid-sweep, and resumes from the shared storage
on nodes that never saw it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import jsonschema
import pandas as pd
import pytest
import yaml
from held_trials import Driver, Hold, Rule, TrialGates, driver
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from ray.autoscaler._private.commands import _bootstrap_config  # what `ray up` runs first
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.cluster_utils import Cluster

from tunelab.tracking.layout import TAG_RETRIES, TAG_ROLE, TAG_STATUS, TAG_TRIAL_ID

if TYPE_CHECKING:
    from ray._private.node import Node

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "ray_cluster.yaml"
README_INSTALL = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e ."
)
COMMAND_LISTS = (
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)


def load_config() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())


def ray_up_checks(config: dict[str, Any]) -> dict[str, Any]:
    """The config as `ray up` resolves it before touching a machine, or the error it stops with:
    the provider's defaults filled in, the local provider's own rules applied, Ray's schema
    checked."""
    return _bootstrap_config(copy.deepcopy(config), no_config_cache=True)


def test_cluster_config_passes_the_checks_of_ray_up():
    config = load_config()
    resolved = ray_up_checks(config)
    workers = len(config["provider"]["worker_ips"])
    assert resolved["max_workers"] == workers >= 1
    (node_type,) = resolved["available_node_types"].values()  # the local provider's only one
    assert node_type["min_workers"] == node_type["max_workers"] == workers


def test_cluster_nodes_install_tunelab_as_the_readme_does():
    config = load_config()
    assert README_INSTALL in (REPO / "README.md").read_text()  # both change together
    assert f"cd ~/tunelab && {README_INSTALL}" in config["setup_commands"]
    assert config["file_mounts"] == {"~/tunelab": "."}


def test_every_cluster_command_is_valid_bash():
    config = load_config()
    for key in COMMAND_LISTS:
        for command in config.get(key, []):
            checked = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
            assert checked.returncode == 0, f"{key}: {command}\n{checked.stderr}"


def _rename(section: str | None, old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        target = config if section is None else config[section]
        target[new] = target.pop(old)

    return edit


def _add_node_types(config: dict[str, Any]) -> None:
    config["available_node_types"] = {"gpu": {"node_config": {}, "resources": {"GPU": 1}}}


@pytest.mark.parametrize(
    ("break_it", "named"),
    [
        (_rename(None, "setup_commands", "setup_comands"), "setup_comands"),
        (_rename("auth", "ssh_user", "ssh_usr"), "ssh_usr"),
        (_rename("provider", "worker_ips", "worker_ip"), "worker_ips"),
        (_add_node_types, "available_node_types"),
    ],
    ids=["top-level key", "auth key", "provider key", "node types on the local provider"],
)
def test_a_broken_cluster_config_is_rejected(break_it, named):
    config = load_config()
    break_it(config)
    with pytest.raises((jsonschema.ValidationError, click.ClickException)) as error:
        ray_up_checks(config)
    assert named in str(error.value)


def test_the_documented_cloud_variant_passes_the_checks_of_ray_up():
    lines = CONFIG.read_text().splitlines()
    block = lines[lines.index("# cloud-begin") + 1 : lines.index("# cloud-end")]
    cloud = yaml.safe_load("\n".join(line.removeprefix("#").removeprefix(" ") for line in block))
    config = {**load_config(), **cloud}  # replaces provider and auth, as the comment says
    # what `ray up` checks short of the provider's own bootstrap, which calls the cloud's API
    resolved = prepare_config(config)
    validate_config(resolved)
    assert resolved["available_node_types"]["gpu_worker"]["max_workers"] == 4


# ---- a real multi-node cluster ----------------------------------------------------------------

NODE_MEMORY = 100 * 1024**2  # object store per node: trials exchange metrics only


@dataclass
class LabCluster:
    """A Ray cluster on this machine shaped like ray_cluster.yaml's: a head without CPUs (the
    driver's node) and 1-CPU worker nodes that run the trials."""

    cluster: Cluster

    @property
    def address(self) -> str:
        return self.cluster.address

    def workers(self) -> list[Node]:
        return list(self.cluster.worker_nodes)

    def add_workers(self, count: int) -> list[Node]:
        added = [
            self.cluster.add_node(wait=False, num_cpus=1, object_store_memory=NODE_MEMORY)
            for _ in range(count)
        ]
        self.cluster.wait_for_nodes()
        return added

    def switch_off(self, node: Node) -> None:
        """The node leaves cleanly, telling the cluster so."""
        self.cluster.remove_node(node, allow_graceful=True)

    def crash(self, node: Node) -> None:
        """The machine dies: every process of the node is killed at once, without a goodbye."""
        self.cluster.remove_node(node, allow_graceful=False)


def running(pid: int) -> bool:
    """Whether a process still runs (an exited one not yet reaped by its parent does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def processes_with(marker: str) -> list[int]:
    """Ids of the processes whose environment holds `marker`: the ones this test started."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if marker.encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
    return [pid for pid in found if pid != os.getpid()]


def stop_leftovers(marker: str, grace_s: float = 10.0) -> None:
    """Workers exit on their own once their raylet is gone; kill any that outlive the grace."""
    deadline = time.monotonic() + grace_s
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in processes_with(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def lab(env: Path, monkeypatch: pytest.MonkeyPatch, free_port: int) -> Iterator[LabCluster]:
    """A head and two worker nodes, stopped (every process of them) however the test ends."""
    # A short folder of our own: Ray's socket paths must stay under 107 characters, and with
    # RAY_TMPDIR there this cluster stays out of /tmp/ray, where another Ray user's `ray.init()`
    # on this machine would find it and attach to it. The nodes' processes (trials included)
    # inherit it and `env`'s data cache; drivers get the same environment.
    root = tempfile.mkdtemp(prefix="tl-ray-", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", root)
    # Ray's test cluster runs without token authentication, and so must its drivers: one
    # attached with `--address auto` would otherwise turn it on, with the token that any local
    # `ray.init()` on this machine leaves in ~/.ray, and its trials would never start
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cluster = None
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,
                "object_store_memory": NODE_MEMORY,
                "include_dashboard": False,
                # free ports, not Ray's fixed 8265 and 52365: another Ray may hold them
                "dashboard_port": free_port,
                "dashboard_agent_listen_port": None,
                # a crashed node refuses every health check at once and is declared dead after
                # 5 of them, 1 s apart, so its trial moves on quickly. A busy node is not: a
                # check fails only when it goes unanswered for 10 s, 5 times in a row
                "_system_config": {
                    "health_check_initial_delay_ms": 1000,
                    "health_check_period_ms": 1000,
                    "health_check_timeout_ms": 10_000,
                    "health_check_failure_threshold": 5,
                },
            },
        )
        lab = LabCluster(cluster)
        lab.add_workers(2)
        yield lab
    finally:
        if cluster is not None:
            cluster.shutdown()
        stop_leftovers(f"RAY_TMPDIR={root}")
        shutil.rmtree(root, ignore_errors=True)


def sweep_on(
    gates: TrialGates, space: Path, address: str, *options: str, rules: tuple[Rule, ...]
) -> contextlib.AbstractContextManager[Driver]:
    """`python -m tunelab.sweep SPACE --address ADDRESS`, as `ray job submit` would run it on the
    head, its trials gated by `rules`; killed if still running when the block ends."""
    command = gates.command(space, "--address", address, "--quiet", *options, rules=rules)
    return driver(command, space.parent / f"driver-{time.monotonic_ns()}.log", gates)


Reports = dict[str, list[dict[str, Any]]]  # trial id -> what it reported, epoch by epoch


def reports(sweep_dir: Path) -> Reports:
    """Every trial's reports so far, as the driver wrote them to the shared storage."""
    found = {}
    for path in sweep_dir.glob("*/result.json"):
        lines = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line being written
                lines.append(json.loads(line))
        if lines:
            found[lines[0]["trial_id"]] = lines
    return found


def finished(trials: Reports) -> set[str]:
    return {trial for trial, lines in trials.items() if lines[-1]["status"] != "running"}


def trial_runs(mlflow_uri: str, experiment: str) -> dict[str, list[Run]]:
    """Trial id -> its MLflow runs (one, when nothing is duplicated)."""
    client = MlflowClient(mlflow_uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r} in {mlflow_uri}"
    query = f"tags.`{TAG_ROLE}` = 'trial'"
    by_trial: dict[str, list[Run]] = {}
    for run in client.search_runs([found.experiment_id], query, max_results=1000):
        by_trial.setdefault(run.data.tags[TAG_TRIAL_ID], []).append(run)
    return by_trial


LONG = 6  # epochs of the long arms
PAUSED_AT, CRASH_AT = 3, 5  # where a long trial waits for Ctrl+C, and for its node's crash


@pytest.mark.e2e
def test_a_sweep_on_a_cluster_resumes_elsewhere_and_survives_a_lost_node(
    lab, write_space, env, gates
):
    """Interrupted on two nodes, resumed from the shared storage on two nodes that never saw
    it, one of which dies mid-sweep: the sweep completes and every trial is logged once."""
    space = write_space(  # a checkpoint every epoch, so a trial mid-way has one to go on from
        "BASE['train.checkpoint_every_s'] = 0\n"
        "ARMS = {'short': {'train.max_epochs': 2}, 'long': {}, 'longer': {}}\nSEEDS = [0]\n",
        epochs=LONG,
    )
    storage, mlflow_uri = env / "shared", f"sqlite:///{env / 'mlflow.db'}"
    sweep_dir = storage / "tiny"
    options = ("--storage", str(storage), "--mlflow-uri", mlflow_uri, "--max-failures", "2")
    options += ("--no-convergence",)  # every trial runs all its epochs
    first_nodes = {node.node_id for node in lab.workers()}

    # 1. on the head, `--address auto` finds the cluster (without it, the sweep could not start
    # its own Ray there). One long trial goes on; the other waits before epoch PAUSED_AT, its
    # first epochs saved: Ctrl+C comes with 2 trials finished and 1 mid-way, in any order
    pause = Hold("paused", epoch=PAUSED_AT, arms=("long", "longer"), free=1)

    def two_finished_one_paused() -> bool:
        return len(finished(reports(sweep_dir))) == 2 and len(gates.held(pause.name)) == 1

    with sweep_on(gates, space, "auto", *options, rules=(pause,)) as sweep:
        sweep.wait_until(two_finished_one_paused, "2 trials finished and 1 paused")
        sweep.process.send_signal(signal.SIGINT)  # Tune saves its state and stops
        assert sweep.end() == 130, sweep.tail()
    before = reports(sweep_dir)
    done_before = finished(before)
    (paused,) = [held["trial_id"] for held in gates.held(pause.name)]
    assert len(done_before) == 2 and paused not in done_before
    assert [line["epoch"] for line in before[paused]] == list(range(1, PAUSED_AT))

    # 2. every node that ran it goes: the resumed sweep has the shared storage and new nodes
    old_nodes = lab.workers()
    new_nodes = {node.node_id for node in lab.add_workers(2)}
    for node in old_nodes:
        lab.switch_off(node)
    crash = Hold("crash", epoch=CRASH_AT)
    with sweep_on(gates, space, lab.address, *options, "--resume", rules=(crash,)) as sweep:
        # 3. the node dies under the trial, mid-way; the trial's next attempt is not held
        (held,) = sweep.wait_until(lambda: gates.held(crash.name), "a trial held for the crash")
        moved, victim = held["trial_id"], held["node"]
        assert victim in new_nodes
        lab.crash(next(node for node in lab.workers() if node.node_id == victim))
        # released only once the trial's process is gone, so that it dies before its epoch
        sweep.wait_until(lambda: not running(held["pid"]), "the crashed trial's process gone")
        gates.release(crash.name)
        assert sweep.end() == 0, sweep.tail()

    results = pd.read_parquet(sweep_dir / "results.parquet")
    results = results[results["primary"]].set_index("trial_id")
    assert len(results) == 3 and (results["status"] == "completed").all()
    assert sorted(results["epochs"]) == [2, LONG, LONG]
    assert results["node_id"].nunique() >= 2  # trials ran on several nodes
    assert set(results.loc[list(done_before), "node_id"]) <= first_nodes
    assert set(results.drop(index=list(done_before))["node_id"]) == new_nodes - {victim}
    after = reports(sweep_dir)
    for trial in done_before:  # finished trials were not run again
        assert after[trial] == before[trial]
    # the paused trial went on from its checkpoint on the shared storage, on a new node, and
    # again from its last one on the other new node once its own had died: each epoch once
    assert moved == paused
    assert [line["epoch"] for line in after[paused]] == list(range(1, LONG + 1))
    ran_on = [line["node_id"] for line in after[paused]]
    assert set(ran_on[: PAUSED_AT - 1]) <= first_nodes
    assert set(ran_on[PAUSED_AT - 1 : CRASH_AT - 1]) == {victim}
    assert set(ran_on[CRASH_AT - 1 :]) == new_nodes - {victim}

    runs = trial_runs(mlflow_uri, "tiny")
    assert {trial: len(found) for trial, found in runs.items()} == dict.fromkeys(results.index, 1)
    assert all(found[0].data.tags[TAG_STATUS] == "completed" for found in runs.values())
    assert int(runs[moved][0].data.tags[TAG_RETRIES]) >= 1
