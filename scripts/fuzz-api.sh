#!/usr/bin/env bash
# API fuzzing: schemathesis (.venv, scripts/setup.sh) runs every check it has against a fresh
# `busway up`, from the portal's and the broker's OpenAPI documents, with a bounded number of
# examples per operation. One event version is deployed first, so the broker's document has a
# path whose body is a real envelope. Fails on any server error, any answer that breaks the
# documented schema, and any other failed check.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
EXAMPLES=${FUZZ_EXAMPLES:-50}
PORTAL=127.0.0.1:${FUZZ_PORTAL_PORT:-14700}
BROKER=127.0.0.1:${FUZZ_BROKER_PORT:-14701}
# A fixed platform-admin key for this throwaway data dir (busway up takes it from the environment).
export BUSWAY_ADMIN_KEY=bwk_fuzz_0123456789abcdefghijklmnopqrstuvwxyz
AUTH="Authorization: Bearer $BUSWAY_ADMIN_KEY"

data=$(mktemp -d)
# The features `make unit` built with, so nothing is compiled again.
$CARGO build -q --workspace --all-features --locked --bin busway
bin="$($CARGO metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/busway"
"$bin" up --data-dir "$data" --portal-addr "$PORTAL" --broker-addr "$BROKER" >"$data/busway.log" 2>&1 &
busway=$!
trap 'kill $busway 2>/dev/null; wait $busway 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
  curl -sf -o /dev/null -H "$AUTH" "http://$BROKER/openapi.json" && break
  sleep 0.2
done

# One deployed event version: the broker's document names it with its envelope.
curl -sf -o /dev/null -XPOST "http://$PORTAL/events" -H "$AUTH" -H 'content-type: application/json' -d '{
  "application": "fuzz_shop", "event_type": "fuzz_order", "description": "an order",
  "connection_type": "HTTPS",
  "data": {"type": "object", "properties": {"sku": {"type": "string"}, "count": {"type": "integer"}},
           "required": ["sku"]}}'
for _ in $(seq 100); do
  curl -sf -H "$AUTH" "http://$BROKER/openapi.json" | grep -q '"/fuzz_order/1"' && break
  sleep 0.2
done

fuzz() {
  .venv/bin/schemathesis "$@" --no-color run "$api/openapi.json" \
    --header "$AUTH" --checks all --max-examples "$EXAMPLES" --seed 1 --generation-database none
}
status=0
api=http://$PORTAL fuzz --config-file scripts/schemathesis-portal.toml || status=1
api=http://$BROKER fuzz || status=1
if [ $status -ne 0 ]; then
  echo "busway's last log lines:"
  tail -20 "$data/busway.log"
fi
exit $status
