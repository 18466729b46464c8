#!/usr/bin/env bash
# `make run`: two demo user-service instances, one order-service, and
# meshgate in front of them with examples/demo.yaml. Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
$PY examples/demo_upstream.py 9001 user-service & pids+=($!)
$PY examples/demo_upstream.py 9002 user-service & pids+=($!)
$PY examples/demo_upstream.py 9003 order-service & pids+=($!)
build/meshgate check -c examples/demo.yaml
cat <<'MSG'

meshgate is starting on 127.0.0.1:8080 (admin API on 127.0.0.1:9901). Try:
  curl localhost:8080/api/users/42       # answered by a user-service instance
  curl localhost:8080/api/orders/7       # answered by order-service
  curl localhost:9901/clusters           # endpoints and pool counts
Ctrl-C stops everything.

MSG
build/meshgate run -c examples/demo.yaml & pids+=($!)
wait "${pids[-1]}"
