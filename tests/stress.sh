#!/usr/bin/env bash
# The tests that wait on other processes (Ray, MLflow, Chromium, signals), ROUNDS times each,
# while a background load this script starts (and stops) keeps every core busy. A test that
# depends on the machine's speed fails here. Run it in the activated virtual environment:
#
#   bash tests/stress.sh [ROUNDS]      # default 5; passes only if every round passes
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
tests=(
  tests/reliability/test_interruptions.py
  tests/reliability/test_mlflow_faults.py
  tests/test_sweep.py
  tests/test_tracking.py
  tests/test_cluster.py
  tests/test_mlflow_ui.py
  tests/test_space.py
)
load=()
stop_load() { kill "${load[@]}" 2>/dev/null || true; }
trap stop_load EXIT
for _ in $(seq "$(nproc)"); do
  (while :; do :; done) &
  load+=($!)
done
passed=0
for round in $(seq "$rounds"); do
  echo "== round $round of $rounds, $(nproc) cores kept busy by ${#load[@]} busy loops"
  started=$(date +%s)
  if pytest -q -p no:cacheprovider "${tests[@]}"; then
    passed=$((passed + 1))
  fi
  echo "== round $round: $(($(date +%s) - started)) s"
done
echo "stress: $passed of $rounds rounds passed"
[ "$passed" -eq "$rounds" ]
