#!/usr/bin/env bash
# `make bench`: every benchmark of the project in one run, on this machine,
# written to BENCHMARKS.md (the previous file is replaced).
#
#   1. proxy: direct to vllm-sim vs through llmtap (capture on, PostgreSQL store)
#      vs through nginx configured the way teams do it today; non-stream and stream.
#   2. Go benchmarks of every package (ingest into each store next to the
#      database's own ceiling, decoders, SSE, spool, panel queries, export).
#
# BENCH_N (requests per proxy run, default 20000), BENCH_C (concurrency, 32),
# BENCH_GO=0 skips the Go benchmarks, BENCH_HEAVY=1 also runs the 10 M-row panel and export benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin

N=${BENCH_N:-20000}
C=${BENCH_C:-32}
OUT=${BENCH_OUT:-BENCHMARKS.md}
work=$(mktemp -d /tmp/llmtap-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

command -v nginx >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
go build -o bin/loadgen ./cmd/loadgen

wait_http() { for _ in $(seq 1 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "bench: $1 did not come up" >&2; return 1; }

# --- the three paths --------------------------------------------------------------
bin/vllm-sim --listen 127.0.0.1:18000 --ttft 0 --token-interval 0 --tokens 16 &
pids+=($!)

psql -h 127.0.0.1 -U postgres -qtAc "DROP DATABASE IF EXISTS llmtap_bench" postgres
psql -h 127.0.0.1 -U postgres -qtAc "CREATE DATABASE llmtap_bench" postgres
store="postgres://postgres@127.0.0.1:5432/llmtap_bench?sslmode=disable"
bin/llmtap migrate --store "$store" >/dev/null

keys=(); names=()
for c in alice bob carol dave; do
  k=$(bin/llmtap keys create --keys-file "$work/keys.yaml" --consumer "$c" --json | sed -E 's/.*"key":"([^"]+)".*/\1/')
  keys+=("$k"); names+=("$c")
done
keylist=$(IFS=,; echo "${keys[*]}"); namelist=$(IFS=,; echo "${names[*]}")

cat >"$work/llmtap.yaml" <<YAML
store: $store
proxy:
  listen: 127.0.0.1:18001
  upstream: http://127.0.0.1:18000
  keys_file: $work/keys.yaml
  spool_dir: $work/spool
ingest:
  listen: 127.0.0.1:18002
admin:
  listen: 127.0.0.1:19464
log:
  level: warn
YAML
bin/llmtap serve --config "$work/llmtap.yaml" 2>"$work/llmtap.log" &
llmtap_pid=$!
pids+=($llmtap_pid)

{
  echo 'worker_processes auto; pid '"$work"'/nginx.pid; error_log '"$work"'/nginx-error.log warn;'
  echo 'events { worker_connections 8192; }'
  echo 'http { access_log off; map_hash_bucket_size 128; client_body_temp_path '"$work"'/ngx-body; proxy_temp_path '"$work"'/ngx-proxy;'
  echo '  fastcgi_temp_path '"$work"'/ngx-fcgi; uwsgi_temp_path '"$work"'/ngx-uwsgi; scgi_temp_path '"$work"'/ngx-scgi;'
  echo '  map $http_authorization $client { default "";'
  for i in "${!keys[@]}"; do echo "    \"Bearer ${keys[$i]}\" \"${names[$i]}\";"; done
  echo '  }'
  echo '  upstream vllm { server 127.0.0.1:18000; keepalive 256; }'
  echo '  server { listen 127.0.0.1:18003;'
  echo '    location / { if ($client = "") { return 401; }'
  echo '      proxy_pass http://vllm; proxy_http_version 1.1; proxy_set_header Connection "";'
  echo '      proxy_set_header X-Consumer-Username $client; proxy_set_header Authorization "";'
  echo '      proxy_buffering off; proxy_cache off; proxy_read_timeout 600s; } } }'
} >"$work/nginx.conf"
nginx -c "$work/nginx.conf" -p "$work"

wait_http http://127.0.0.1:18000/health
wait_http http://127.0.0.1:19464/healthz
for _ in $(seq 1 50); do curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18003/health | grep -q 401 && break; sleep 0.1; done

lg() { bin/loadgen -json -n "$N" -c "$C" -keys "$keylist" -consumers "$namelist" "$@"; }
declare -A R
for mode in nonstream stream; do
  ratio=0; [ "$mode" = stream ] && ratio=1
  lg -url http://127.0.0.1:18000 -stream-ratio $ratio -n 300 >/dev/null   # warm-up
  R[direct-$mode]=$(lg -url http://127.0.0.1:18000 -stream-ratio $ratio -label direct)
  lg -url http://127.0.0.1:18001 -stream-ratio $ratio -n 300 >/dev/null
  R[llmtap-$mode]=$(lg -url http://127.0.0.1:18001 -stream-ratio $ratio -label llmtap)
  lg -url http://127.0.0.1:18003 -stream-ratio $ratio -n 300 >/dev/null
  R[nginx-$mode]=$(lg -url http://127.0.0.1:18003 -stream-ratio $ratio -label nginx)
done
rss_kb=$(awk '/VmHWM/ {print $2}' /proc/$llmtap_pid/status)
sleep 2
stored=$(psql -h 127.0.0.1 -U postgres -qtAc "SELECT count(*) FROM llm_requests" llmtap_bench)

# --- memory per open stream ----------------------------------------------------------
# 500 slow streams held open through llmtap; RSS growth divided by the count.
bin/vllm-sim --listen 127.0.0.1:18010 --ttft 0 --token-interval 200ms --tokens 40 &
pids+=($!)
sed -e 's#127.0.0.1:18000#127.0.0.1:18010#' -e 's#18001#18011#' -e 's#18002#18012#' -e 's#19464#19465#' -e "s#$work/spool#$work/spool2#" "$work/llmtap.yaml" >"$work/llmtap-slow.yaml"
bin/llmtap serve --config "$work/llmtap-slow.yaml" 2>"$work/llmtap-slow.log" &
slow_pid=$!
pids+=($slow_pid)
wait_http http://127.0.0.1:18010/health; wait_http http://127.0.0.1:19465/healthz
bin/loadgen -url http://127.0.0.1:18011 -keys "$keylist" -n 50 -c 10 -stream-ratio 1 >/dev/null   # warm-up
rss0=$(awk '/VmRSS/ {print $2}' /proc/$slow_pid/status)
bin/loadgen -url http://127.0.0.1:18011 -keys "$keylist" -n 500 -c 500 -stream-ratio 1 -max-tokens 40 >/dev/null &
lgpid=$!
sleep 4
rss1=$(awk '/VmRSS/ {print $2}' /proc/$slow_pid/status)
wait $lgpid
per_stream_kb=$(( (rss1 - rss0) / 500 ))

# --- Go benchmarks ----------------------------------------------------------------------
gobench=$work/gobench.txt
: >"$gobench"
if [ -n "${BENCH_HEAVY:-}" ]; then
  export LLMTAP_BENCH_ROWS=10000000 LLMTAP_BENCH_EXPORT_ROWS=10000000
else
  export LLMTAP_BENCH_ROWS=${LLMTAP_BENCH_ROWS:-200000}   # panel queries on a small table; 10 M with BENCH_HEAVY=1
fi
[ "${BENCH_GO:-1}" = 0 ] || go test -run '^$' -bench . -benchmem -benchtime ${BENCH_TIME:-1s} -timeout 60m ./... 2>&1 | grep -E '^(Benchmark|ok|FAIL|pkg:|---)' | grep -v '^ok' >"$gobench" || true

# --- report -----------------------------------------------------------------------------------
j() { sed -E "s/.*\"$2\":([0-9.]+).*/\1/" <<<"${R[$1]}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }
{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` (scripts/bench.sh) on $(date -u +%Y-%m-%d), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(go version | cut -d' ' -f3)."
  echo "Every row of a table is measured in the same run on the same machine; ratios compare rows of that run."
  echo
  echo "## Proxy: direct vs llmtap vs nginx"
  echo
  echo "loadgen, $N requests per row, $C concurrent clients, 4 consumers, vllm-sim with no artificial delay (16 tokens)."
  echo "llmtap runs \`serve\` with capture on and every event committed to PostgreSQL ($stored rows stored)."
  echo "nginx: \`map\` of Bearer keys to names, \`if (\$client = \"\") return 401\`, \`proxy_buffering off\`, upstream keepalive."
  echo
  echo "| mode | path | req/s | p50 ms | p99 ms | TTFB p50 ms | added p50 ms vs direct | throughput vs nginx |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  for mode in nonstream stream; do
    for path in direct llmtap nginx; do
      k=$path-$mode
      added=$(awk -v a="$(j $k p50_ms)" -v b="$(j direct-$mode p50_ms)" 'BEGIN { printf "%.2f", a - b }')
      echo "| $mode | $path | $(printf '%.0f' "$(j $k rps)") | $(j $k p50_ms) | $(j $k p99_ms) | $(j $k ttfb_p50_ms) | $added | $(ratio "$(j $k rps)" "$(j nginx-$mode rps)") |"
    done
  done
  echo
  for mode in nonstream stream; do
    al=$(awk -v a="$(j llmtap-$mode p50_ms)" -v b="$(j direct-$mode p50_ms)" 'BEGIN { print a - b }')
    an=$(awk -v a="$(j nginx-$mode p50_ms)" -v b="$(j direct-$mode p50_ms)" 'BEGIN { print a - b }')
    echo "- $mode: llmtap throughput / nginx = $(ratio "$(j llmtap-$mode rps)" "$(j nginx-$mode rps)") (goal ≥ 1.0); added p50 llmtap / nginx = $(ratio "$al" "$an") (goal ≤ 1.2)"
  done
  echo "- llmtap peak RSS during the runs: $((rss_kb / 1024)) MiB"
  echo "- memory per open stream (500 concurrent slow streams, RSS growth / 500): ${per_stream_kb} KiB (goal ≤ 32 KiB beyond captured bytes; captured bytes per stream here ≈ 3 KiB)"
  echo
  echo "Raw loadgen summaries:"
  echo '```'
  for k in "${!R[@]}"; do echo "${R[$k]}"; done | sort
  echo '```'
  echo
  echo "## Go benchmarks"
  echo
  echo "\`go test -run '^\$' -bench . -benchmem -benchtime ${BENCH_TIME:-1s} ./...\` (panel queries over \$LLMTAP_BENCH_ROWS=${LLMTAP_BENCH_ROWS} rows; 10 M rows and the 10 M-row export only with BENCH_HEAVY=1 — the last heavy results are in [dashboards/BENCHMARKS.md](dashboards/BENCHMARKS.md) and [query/README.md](query/README.md)). Ingest benchmarks report events/s next to the database's own ceiling measured in the same run."
  echo
  echo '```'
  cat "$gobench"
  echo '```'
  echo
  echo "## 10 M-row results (recorded by their heavy benchmarks)"
  echo
  echo "Panel queries (dashboards/BENCHMARKS.md, latest run):"
  echo
  sed -n '/^## Latest run/,/^## /p' dashboards/BENCHMARKS.md | sed -e '1d' -e '$d'
  echo "Export of 10 M rows (query/README.md):"
  echo
  sed -n '/^| store | format/,/^$/p' query/README.md
  echo "Reproduce: \`make bench\` (or \`BENCH_N=10000 BENCH_HEAVY=1 make bench\`)."
} >"$OUT"
echo "bench: wrote $OUT" >&2
