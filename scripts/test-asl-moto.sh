#!/usr/bin/env bash
# One moto server for this run on 127.0.0.1 and a free port, with its real Step Functions engine
# switched on (moto only records executions otherwise), stopped on exit; then statemachines/test_moto.py against it.
set -euo pipefail
cd "$(dirname "$0")/.."
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
.venv/bin/moto_server -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; rm -f "$log"' EXIT
url="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -sf "$url/moto-api/" >/dev/null && break; sleep 0.1; done
curl -sf -XPOST -H 'Content-Type: application/json' \
  -d '{"stepfunctions":{"execute_state_machine":true},"lambda":{"use_docker":false}}' "$url/moto-api/config" >/dev/null
.venv/bin/python statemachines/test_moto.py "$url" || { tail -30 "$log" >&2; exit 1; }
