#!/usr/bin/env bash
# `make demo`: realistic mixed traffic through a running `make run`, so that the
# dashboards and `llmtap query` show something: three consumers, 70 % streams,
# some upstream errors, and one consumer (carol, 10 requests/minute) that hits
# its rate limit. Keys are added to the running proxy's keys file (hot reload).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data}
PROXY=${PROXY:-http://127.0.0.1:8001}
STORE=${STORE:-postgres://postgres@127.0.0.1:5432/llmtap?sslmode=disable}

if ! curl -s -o /dev/null "$PROXY/health"; then
  echo "demo: nothing answers on $PROXY; start it first with 'make run' in another terminal" >&2
  exit 1
fi
go build -o bin/loadgen ./cmd/loadgen

newkey() { bin/llmtap keys create --keys-file "$DATA/keys.yaml" --consumer "$1" "${@:2}" --json | sed -E 's/.*"key":"([^"]+)".*/\1/'; }
alice=$(newkey alice); bob=$(newkey bob); carol=$(newkey carol --rpm 10)
sleep 2.5 # the proxy re-reads the keys file within 2 s

echo "demo: alice and bob, 300 requests, 70 % streamed, 5 % upstream errors" >&2
bin/loadgen -url "$PROXY" -keys "$alice,$bob" -consumers alice,bob -n 300 -c 8 -stream-ratio 0.7 -fault-ratio 0.05 -max-tokens 32 -label alice+bob
echo "demo: alice, 20 streams cut mid-way by the upstream" >&2
bin/loadgen -url "$PROXY" -keys "$alice" -n 20 -c 4 -stream-ratio 1 -fault-ratio 1 -fault midstream-error -label midstream-errors
echo "demo: carol, 30 requests against a limit of 10 per minute" >&2
bin/loadgen -url "$PROXY" -keys "$carol" -consumers carol -n 30 -c 2 -stream-ratio 0.5 -label carol
sleep 1.5 # the last batch commits
bin/llmtap query usage --from now-1h --store "$STORE"
bin/llmtap query errors --from now-1h --store "$STORE"
