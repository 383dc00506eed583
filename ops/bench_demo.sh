#!/usr/bin/env bash
# Time from `dsctl up --demo` (fresh store) to every seed DaemonSet converged, observed through the CLI.
# Usage: ops/bench_demo.sh [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
D=.venv/bin/dsctl
PORT="${1:-14444}"
STORE=$(mktemp -d)
export NATS_URL="nats://127.0.0.1:$PORT"
start=$(date +%s.%N)
$D up --demo --port "$PORT" --store "$STORE/nats" --log-file "$STORE/log" > "$STORE/up.out" 2>&1 &
pid=$!
trap 'kill -INT $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$STORE"' EXIT
until $D get ds -A -o json 2>/dev/null | .venv/bin/python -c '
import json, sys
items = json.load(sys.stdin)["items"]
ok = len(items) == 4 and all(
    i["status"]["observedGeneration"] == i["metadata"]["generation"]
    and i["status"].get("numberAvailable", 0) == i["status"]["desiredNumberScheduled"] == i["status"].get("updatedNumberScheduled", 0)
    for i in items)
sys.exit(0 if ok else 1)' 2>/dev/null; do sleep 0.05; done
end=$(date +%s.%N)
echo "dsctl up --demo: every seed DaemonSet converged $(echo "$end - $start" | bc) s after start"
