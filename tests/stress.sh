#!/usr/bin/env bash
# The tests that wait on other processes (Ray, MLflow, Chromium, signals), ROUNDS times each, on
# a slow machine and on a fast one. Run it in the activated virtual environment:
#
#   bash tests/stress.sh [ROUNDS]        # loaded (default 5 rounds); passes if every round does
#   bash tests/stress.sh fast [ROUNDS]   # fast: no load, and trials as small as they go
#
# Loaded: a background load this script starts (and stops) keeps every core busy, at niceness
# 15 (STRESS_NICE), the niceness Ray gives its trial workers, so it takes an equal share of the
# CPU from the trials and leaves the rest (test, driver, MLflow) at normal priority.
# STRESS_NICE=0 is harsher: trials then get about 3% of a core, and a round takes over 20 min.
# Fast: nothing else runs, and TUNELAB_FAST_TRIALS=1 shrinks the tests' tiny trial (conftest.py),
# so trials end as soon as this machine can end them. A test whose outcome depends on the
# machine's speed fails in one mode or the other: these tests wait for conditions, and hold
# their trials where they need them (held_trials.py) instead of racing them.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=loaded
if [ "${1:-}" = fast ]; then
  mode=fast
  shift
fi
rounds=${1:-5}
tests=(  # each waits on processes it does not control, where timing used to decide
  tests/reliability/test_interruptions.py::test_sigkilled_driver_resumes_the_same_trials
  tests/reliability/test_mlflow_faults.py::test_server_lost_mid_sweep_loses_nothing_once_it_is_back
  tests/test_sweep.py::test_interrupted_sweep_resumes_without_rerunning_finished_trials
  tests/test_sweep.py::test_search_with_asha_prunes_and_labels_arms
  tests/test_searcher.py::test_resumed_tpe_sweep_does_not_repeat_configurations
  tests/test_tracking.py::test_four_concurrent_trials_lose_nothing
  tests/test_cluster.py::test_a_sweep_on_a_cluster_resumes_elsewhere_and_survives_a_lost_node
  tests/test_mlflow_ui.py::test_mlflow_ui_lists_the_sweep_and_its_trials
  tests/test_space.py::test_cli_rejects_bad_space_without_importing_ray_or_torch
)
load=()
stop_load() { kill "${load[@]}" 2>/dev/null || true; }
trap stop_load EXIT
if [ "$mode" = fast ]; then
  export TUNELAB_FAST_TRIALS=1
  conditions="fast: no load, fast trials"
else
  for _ in $(seq "$(nproc)"); do
    nice -n "${STRESS_NICE:-15}" bash -c 'while :; do :; done' &
    load+=($!)
  done
  conditions="$(nproc) cores kept busy by ${#load[@]} busy loops (nice ${STRESS_NICE:-15})"
fi
passed=0
for round in $(seq "$rounds"); do
  echo "== round $round of $rounds, $conditions"
  started=$(date +%s)
  if pytest -q -p no:cacheprovider --durations=12 "${tests[@]}"; then
    passed=$((passed + 1))
  fi
  echo "== round $round: $(($(date +%s) - started)) s"
done
echo "stress ($mode): $passed of $rounds rounds passed"
[ "$passed" -eq "$rounds" ]
