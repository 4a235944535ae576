#!/usr/bin/env bash
# `make run`: llmtap serve in front of vLLM (UPSTREAM=http://host:port) or, when
# UPSTREAM is not given, in front of bin/vllm-sim. Makes sure PostgreSQL is up,
# creates and migrates the `llmtap` database, creates a demo key, prints how to
# send a first request, and runs until Ctrl-C (which stops everything).
#
# Environment: UPSTREAM, UPSTREAM_API_KEY, STORE (default postgres llmtap db),
# PROXY_LISTEN (127.0.0.1:8001), DATA (./data).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-data}
STORE=${STORE:-postgres://postgres@127.0.0.1:5432/llmtap?sslmode=disable}
PROXY_LISTEN=${PROXY_LISTEN:-127.0.0.1:8001}
mkdir -p "$DATA"

case "$STORE" in
  clickhouse://*) ./scripts/services.sh ;;
  *) SKIP_CLICKHOUSE=1 SKIP_NODE=1 SKIP_PROMETHEUS=1 ./scripts/services.sh
     db=$(sed -E 's#^[a-z]+://[^/]*/([^?]*).*#\1#' <<<"$STORE")
     admin=$(sed -E "s#/${db}(\?|$)#/postgres\1#" <<<"$STORE")
     if ! psql "$admin" -tAc "SELECT 1 FROM pg_database WHERE datname='${db}'" | grep -q 1; then
       echo "run: creating database ${db}" >&2
       psql "$admin" -qc "CREATE DATABASE \"${db}\""
     fi ;;
esac
bin/llmtap migrate --store "$STORE" >&2

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

if [ -z "${UPSTREAM:-}" ]; then
  UPSTREAM=http://127.0.0.1:8000
  echo "run: no UPSTREAM given, starting bin/vllm-sim on 127.0.0.1:8000" >&2
  bin/vllm-sim --listen 127.0.0.1:8000 --ttft 80ms --token-interval 15ms --tokens 48 &
  pids+=($!)
fi

key_json=$(bin/llmtap keys create --keys-file "$DATA/keys.yaml" --consumer demo --json)
key=$(sed -E 's/.*"key":"([^"]+)".*/\1/' <<<"$key_json")

cat >"$DATA/llmtap.yaml" <<YAML
store: $STORE
proxy:
  listen: $PROXY_LISTEN
  upstream: $UPSTREAM
  upstream_api_key: "${UPSTREAM_API_KEY:-}"
  keys_file: $DATA/keys.yaml
  spool_dir: $DATA/spool
log:
  format: text
YAML

base="http://$PROXY_LISTEN/v1"
cat <<MSG

llmtap is running: proxy http://$PROXY_LISTEN -> $UPSTREAM, store $STORE
Demo key (shown once; more with bin/llmtap keys create --keys-file $DATA/keys.yaml --consumer NAME):

  export OPENAI_API_KEY=$key OPENAI_BASE_URL=$base

First request:
  curl -s \$OPENAI_BASE_URL/chat/completions -H "Authorization: Bearer \$OPENAI_API_KEY" \\
    -H 'Content-Type: application/json' \\
    -d '{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"Hello!"}],"stream":true}'

Python:  from openai import OpenAI; print(OpenAI().chat.completions.create(model="meta-llama/Llama-3.1-8B-Instruct", messages=[{"role":"user","content":"Hi"}]).choices[0].message.content)
Node:    import OpenAI from "openai"; const r = await new OpenAI().chat.completions.create({model: "meta-llama/Llama-3.1-8B-Instruct", messages: [{role: "user", content: "Hi"}]}); console.log(r.choices[0].message.content)

See it:      bin/llmtap query conversations --store '$STORE'
Dashboards:  bin/llmtap dashboards --datasource postgres --out dashboards-out   (import into Grafana; see dashboards/README.md)
Metrics:     curl -s http://127.0.0.1:9464/metrics | grep llmtap_
Ctrl-C stops everything.

MSG

bin/llmtap serve --config "$DATA/llmtap.yaml" &
pids+=($!)
wait "${pids[-1]}"
