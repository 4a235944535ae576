#!/usr/bin/env bash
# `make bench`: every benchmark of the project in one run, on this machine,
# written to BENCHMARKS.md (the previous file is replaced).
#
#   1. proxy, vllm-sim with no delay: direct vs `llmtap serve` (capture on,
#      PostgreSQL store) vs `llmtap proxy` + `llmtap ingest` (split deployment,
#      same store) vs nginx configured the way teams do it today; non-stream
#      and stream. Every row also reports the CPU time each process used.
#   2. the same paths with vLLM-like timings (50 ms to first token, 10 ms per
#      token, 64 tokens) and 256 concurrent clients.
#   3. memory per open stream (500 slow streams) for llmtap serve, llmtap
#      proxy and nginx, and the Go heap+stack figure of BenchmarkProxyStreamMemory.
#   4. Go benchmarks of every package (ingest into each store next to the
#      database's own ceiling, decoders, SSE, spool, panel queries, export).
#
# BENCH_N (requests per no-delay row, default 20000), BENCH_C (its concurrency, 32),
# BENCH_N_REAL (requests per vLLM-like row, 3000), BENCH_C_REAL (its concurrency, 256),
# BENCH_GO=0 skips the Go benchmarks of every package (the stream-memory one still runs),
# BENCH_HEAVY=1 also runs the 10 M-row panel and export benchmarks,
# BENCH_OUT (default BENCHMARKS.md) is the report written.
#
# Every process it starts is stopped on exit, success or failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin

N=${BENCH_N:-20000}
C=${BENCH_C:-32}
NR=${BENCH_N_REAL:-3000}
CR=${BENCH_C_REAL:-256}
OUT=${BENCH_OUT:-BENCHMARKS.md}
TCK=$(getconf CLK_TCK)
DB=llmtap_bench
work=$(mktemp -d /tmp/llmtap-bench.XXXXXX)

# --- processes: started with start, stopped with stop, all of them on exit ----------
pids=()
declare -A PID
ngx_master=""
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$ngx_master" ]; then kill "$ngx_master" 2>/dev/null || true; fi
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$rc" = 0 ]; then rm -rf "$work"; else echo "bench: failed (exit $rc); logs are in $work" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget() { local p keep=(); for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done; pids=("${keep[@]}"); }
# start NAME CMD...: runs CMD in the background, stderr to $work/NAME.log.
start() { local name=$1; shift; "$@" 2>"$work/$name.log" & PID[$name]=$!; pids+=("$!"); }
# stop NAME: SIGTERM and wait.
stop() { local p=${PID[$1]}; kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; forget "$p"; }
wait_http() { for _ in $(seq 1 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "bench: $1 did not come up" >&2; return 1; }

command -v nginx >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
go build -o bin/loadgen ./cmd/loadgen
go build -o bin/baseline ./cmd/baseline

# --- CPU accounting -------------------------------------------------------------------
# ticks PID...: utime+stime (/proc/PID/stat fields 14 and 15, clock ticks)
# summed over the processes; a process that is gone counts 0.
ticks() {
  local t=0 p v
  for p in "$@"; do
    v=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null) || v=0
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
# machine_ticks: CPU the whole machine used (/proc/stat user, nice, system,
# irq, softirq; not idle, iowait or steal), clock ticks.
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
# pg_all_ticks: ticks of every postgres process (found now).
# shellcheck disable=SC2046 # a word list of pids
pg_all_ticks() { ticks $(pgrep -x postgres); }
# pg_ticks: ticks of the postgres processes that serve the bench database:
# its backends, the postmaster and the background processes (WAL writer,
# checkpointer, …, which serve every database), not other databases' backends
# (tests of other work share this PostgreSQL), nor the query that lists them.
# shellcheck disable=SC2046
pg_ticks() {
  ticks $(pgrep -o -x postgres) $(q "SELECT pid FROM pg_stat_activity WHERE (datname = '$DB' OR datname IS NULL) AND pid <> pg_backend_pid()")
}
# busy_pct SECONDS: share of the machine's CPU in use over SECONDS, in %.
busy_pct() {
  local b0 t0 b1 t1
  read -r b0 t0 < <(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
  sleep "$1"
  read -r b1 t1 < <(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
  awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) 'BEGIN { printf "%.0f", (t > 0 ? 100 * b / t : 0) }'
}
# quiet: waits until other work leaves the machine under 25 % busy, at most
# 10 s per row and 40 s per run in all (so that a busy machine cannot stretch
# `make bench`); prints the last busy share seen.
quiet_left=80   # half-second samples
quiet() {
  local b i
  for i in $(seq 1 20); do
    b=$(busy_pct 0.5)
    quiet_left=$((quiet_left - 1))
    if [ "$b" -lt 25 ] || [ "$quiet_left" -le 0 ]; then break; fi
  done
  echo "$b"
}
nginx_pids() { echo "$ngx_master $(pgrep -P "$ngx_master" | tr '\n' ' ')"; }
nginx_workers() { pgrep -P "$ngx_master" | tr '\n' ' '; }
# us TICKS REQUESTS: µs of CPU per request.
us() { awk -v t="$1" -v hz="$TCK" -v n="$2" 'BEGIN { if (n > 0) printf "%.0f", t * 1e6 / hz / n; else print "n/a" }'; }

# --- store, keys, nginx ------------------------------------------------------------------
psql -h 127.0.0.1 -U postgres -qtAc "DROP DATABASE IF EXISTS $DB" postgres
psql -h 127.0.0.1 -U postgres -qtAc "CREATE DATABASE $DB" postgres
store="postgres://postgres@127.0.0.1:5432/$DB?sslmode=disable"
bin/llmtap migrate --store "$store" >/dev/null
q() { psql -h 127.0.0.1 -U postgres -qtAc "$1" "$DB"; }

keys=(); names=()
for c in alice bob carol dave; do
  k=$(bin/llmtap keys create --keys-file "$work/keys.yaml" --consumer "$c" --json | sed -E 's/.*"key":"([^"]+)".*/\1/')
  keys+=("$k"); names+=("$c")
done
keylist=$(IFS=,; echo "${keys[*]}"); namelist=$(IFS=,; echo "${names[*]}")

# Ports: vllm-sim 18000 (no delay), 18020 (vLLM-like), 18010 (slow, memory);
# on top of each, +1 llmtap serve, +3 nginx, +4 llmtap proxy, +7 and +8 the Go
# baselines (net/http, fasthttp).
# llmtap ingest 18002.
# shellcheck disable=SC2016 # nginx variables, not shell ones
{
  echo 'worker_processes auto; worker_rlimit_nofile 65536; pid '"$work"'/nginx.pid; error_log '"$work"'/nginx-error.log warn;'
  echo 'events { worker_connections 8192; }'
  echo 'http { access_log off; map_hash_bucket_size 128; client_body_temp_path '"$work"'/ngx-body; proxy_temp_path '"$work"'/ngx-proxy;'
  echo '  fastcgi_temp_path '"$work"'/ngx-fcgi; uwsgi_temp_path '"$work"'/ngx-uwsgi; scgi_temp_path '"$work"'/ngx-scgi;'
  echo '  map $http_authorization $client { default "";'
  for i in "${!keys[@]}"; do echo "    \"Bearer ${keys[$i]}\" \"${names[$i]}\";"; done
  echo '  }'
  for up in 18000 18020 18010; do
    echo "  upstream vllm$up { server 127.0.0.1:$up; keepalive 256; }"
    echo "  server { listen 127.0.0.1:$((up + 3));"
    echo '    location / { if ($client = "") { return 401; }'
    echo "      proxy_pass http://vllm$up; proxy_http_version 1.1; proxy_set_header Connection \"\";"
    echo '      proxy_set_header X-Consumer-Username $client; proxy_set_header Authorization "";'
    echo '      proxy_buffering off; proxy_cache off; proxy_read_timeout 600s; } }'
  done
  echo '}'
} >"$work/nginx.conf"
nginx -c "$work/nginx.conf" -p "$work"
for _ in $(seq 1 50); do [ -s "$work/nginx.pid" ] && break; sleep 0.1; done
ngx_master=$(cat "$work/nginx.pid")

# llmtap_cfg FILE PROXY_PORT UPSTREAM_PORT INGEST_PORT ADMIN_PORT [INGEST_URL]
llmtap_cfg() {
  {
    echo "store: $store"
    echo "proxy:"
    echo "  listen: 127.0.0.1:$2"
    echo "  upstream: http://127.0.0.1:$3"
    echo "  keys_file: $work/keys.yaml"
    echo "  spool_dir: $work/spool-$2"
    [ -z "${6:-}" ] || echo "  ingest_url: $6"
    echo "ingest:"
    echo "  listen: 127.0.0.1:$4"
    echo "admin:"
    echo "  listen: 127.0.0.1:$5"
    echo "log:"
    echo "  level: warn"
  } >"$1"
}

# The one ingest process of the split deployment, for every scenario.
llmtap_cfg "$work/ingest.yaml" 18999 18000 18002 19402
start ingest bin/llmtap ingest --config "$work/ingest.yaml"
wait_http http://127.0.0.1:19402/healthz

# up SIM_PORT SIM_FLAGS...: vllm-sim, llmtap serve, llmtap proxy and the Go
# baselines (cmd/baseline: the nginx configuration above on net/http and on
# fasthttp) for one scenario.
up() {
  local p=$1; shift
  start "sim$p" bin/vllm-sim --listen "127.0.0.1:$p" "$@"
  llmtap_cfg "$work/serve$p.yaml" $((p + 1)) "$p" $((p + 5)) $((p + 1401))
  start "serve$p" bin/llmtap serve --config "$work/serve$p.yaml"
  llmtap_cfg "$work/proxy$p.yaml" $((p + 4)) "$p" $((p + 6)) $((p + 1404)) http://127.0.0.1:18002
  start "proxy$p" bin/llmtap proxy --config "$work/proxy$p.yaml"
  start "nethttp$p" bin/baseline --stack nethttp --listen "127.0.0.1:$((p + 7))" --upstream "http://127.0.0.1:$p" --keys "$keylist" --consumers "$namelist"
  start "fasthttp$p" bin/baseline --stack fasthttp --listen "127.0.0.1:$((p + 8))" --upstream "http://127.0.0.1:$p" --keys "$keylist" --consumers "$namelist"
  wait_http "http://127.0.0.1:$p/health"
  wait_http "http://127.0.0.1:$((p + 1401))/healthz"
  wait_http "http://127.0.0.1:$((p + 1404))/healthz"
  local q
  for q in 3 7 8; do
    for _ in $(seq 1 50); do curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$((p + q))/health" | grep -q 401 && break; sleep 0.1; done
  done
}
down() { stop "fasthttp$1"; stop "nethttp$1"; stop "proxy$1"; stop "serve$1"; stop "sim$1"; }

# --- stored events ---------------------------------------------------------------------
# drain SINCE WANT: waits until llm_requests holds WANT rows with ts >= SINCE,
# or until the count has not grown for 6 s; prints the count. (The shipper
# sends a partial batch after 1 s.) Each poll is a short psql session.
drain() {
  local since=$1 want=$2 n last=-1 still=0
  sleep 0.3
  while :; do
    n=$(q "SELECT count(*) FROM llm_requests WHERE ts >= '$since'")
    [ "$n" -ge "$want" ] && break
    if [ "$n" = "$last" ]; then still=$((still + 1)); [ "$still" -ge 30 ] && break; else still=0; fi
    last=$n
    sleep 0.2
  done
  echo "$n"
}
order=()  # row keys in the order they ran
sent=0    # requests sent through llmtap (warm-ups included), all rows
lost=()   # rows whose events did not all reach the store

# --- one row ------------------------------------------------------------------------------
declare -A R CP CI CG CT CM CD ST
proxy_pids() {
  case $1 in
    llmtap) echo "${PID[serve$2]}" ;;
    llmtap-split) echo "${PID[proxy$2]}" ;;
    go-nethttp) echo "${PID[nethttp$2]}" ;;
    go-fasthttp) echo "${PID[fasthttp$2]}" ;;
    nginx) nginx_pids ;;
  esac
}
url_of() { case $1 in direct) echo "http://127.0.0.1:$2" ;; llmtap) echo "http://127.0.0.1:$(($2 + 1))" ;; llmtap-split) echo "http://127.0.0.1:$(($2 + 4))" ;; go-nethttp) echo "http://127.0.0.1:$(($2 + 7))" ;; go-fasthttp) echo "http://127.0.0.1:$(($2 + 8))" ;; nginx) echo "http://127.0.0.1:$(($2 + 3))" ;; esac; }

# row SCEN SIM_PORT MODE PATH N C WARM [loadgen flags...]
# Warm-up, a wait for other work to leave the machine, then the measured run;
# CPU is counted from just before the run until every event of an llmtap row
# is stored.
row() {
  local scen=$1 sp=$2 mode=$3 path=$4 n=$5 c=$6 warm=$7; shift 7
  local key=$scen/$mode/$path url ratio=0 since pp ip got bg
  local p0 i0 g0 a0 s0 m0 p1 i1 g1 a1 s1 m1 lg reqs
  [ "$mode" = stream ] && ratio=1
  url=$(url_of "$path" "$sp")
  since=$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)
  bin/loadgen -url "$url" -keys "$keylist" -n "$warm" -c "$c" -stream-ratio $ratio "$@" >/dev/null
  case $path in llmtap*) drain "$since" "$warm" >/dev/null ;; esac
  quiet >"$work/quiet"; bg=$(cat "$work/quiet")   # not $(quiet): quiet_left must be updated here
  pp=$(proxy_pids "$path" "$sp"); ip=""
  [ "$path" = llmtap-split ] && ip=${PID[ingest]}
  # shellcheck disable=SC2086 # word lists of pids
  { p0=$(ticks $pp); i0=$(ticks $ip); g0=$(pg_ticks); a0=$(pg_all_ticks); s0=$(ticks "${PID[sim$sp]}"); m0=$(machine_ticks); }
  order+=("$key")
  R[$key]=$(bin/loadgen -json -url "$url" -keys "$keylist" -consumers "$namelist" -n "$n" -c "$c" -stream-ratio $ratio -label "$scen/$mode/$path" "$@")
  case $path in
    llmtap*)
      got=$(drain "$since" $((warm + n)))
      sent=$((sent + warm + n))
      ST[$key]="$got of $((warm + n))"
      [ "$got" = $((warm + n)) ] || lost+=("$key: $got of $((warm + n)) events stored")
      ;;
  esac
  # shellcheck disable=SC2086
  { p1=$(ticks $pp); i1=$(ticks $ip); g1=$(pg_ticks); a1=$(pg_all_ticks); s1=$(ticks "${PID[sim$sp]}"); m1=$(machine_ticks); }
  reqs=$(j "$key" requests)
  lg=$(awk -v s="$(j "$key" cpu_seconds)" -v hz="$TCK" 'BEGIN { printf "%.0f", s * hz }')
  CP[$key]=$(us $((p1 - p0)) "$reqs"); CI[$key]=$(us $((i1 - i0)) "$reqs"); CG[$key]=$(us $((g1 - g0)) "$reqs")
  CT[$key]=$(us $((p1 - p0 + i1 - i0 + g1 - g0 + s1 - s0 + lg)) "$reqs")
  CM[$key]=$(us $((m1 - m0)) "$reqs")
  CD[$key]="$key: proxy ${CP[$key]}, ingest ${CI[$key]}, store ${CG[$key]} (all postgres processes $(us $((a1 - a0)) "$reqs")), vllm-sim $(us $((s1 - s0)) "$reqs"), loadgen $(us "$lg" "$reqs"), total ${CT[$key]}, machine ${CM[$key]} µs/req; machine busy before the row ${bg} %"
  echo "bench: ${CD[$key]}; $(printf '%.0f' "$(j "$key" rps)") req/s, p50 $(j "$key" p50_ms) ms, errors $(j "$key" errors)${ST[$key]:+; stored ${ST[$key]}}" >&2
}
j() { sed -E "s/.*\"$2\":([-0-9.e+]+).*/\1/" <<<"${R[$1]}"; }
paths=(direct llmtap llmtap-split go-nethttp go-fasthttp nginx)

phase() { echo "bench: ${SECONDS}s: $1" >&2; }

# --- 1. no upstream delay -------------------------------------------------------------------
phase "no-delay scenario"
up 18000 --ttft 0 --token-interval 0 --tokens 16
for mode in nonstream stream; do
  for path in "${paths[@]}"; do row nodelay 18000 "$mode" "$path" "$N" "$C" 300; done
done
rss_serve_kb=$(awk '/VmHWM/ {print $2}' "/proc/${PID[serve18000]}/status")
rss_proxy_kb=$(awk '/VmHWM/ {print $2}' "/proc/${PID[proxy18000]}/status")
down 18000

# --- 2. vLLM-like timings -----------------------------------------------------------------
phase "vLLM-like scenario"
up 18020 --ttft 50ms --token-interval 10ms --tokens 64
for mode in nonstream stream; do
  for path in "${paths[@]}"; do row vllm 18020 "$mode" "$path" "$NR" "$CR" "$CR" -max-tokens 64; done
done
down 18020
rss_ingest_kb=$(awk '/VmHWM/ {print $2}' "/proc/${PID[ingest]}/status")

# --- 3. memory per open stream ------------------------------------------------------------
# 500 slow streams (40 tokens, 200 ms apart) held open through each proxy;
# RSS growth of the proxy's processes, sampled 4 s in, divided by 500.
phase "memory per open stream"
up 18010 --ttft 0 --token-interval 200ms --tokens 40
stream_bytes=$(curl -s -H 'X-Sim-Token-Interval: 0' -H 'Content-Type: application/json' \
  -d '{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"request 1: say something about load testing"}],"max_tokens":40,"stream":true}' \
  http://127.0.0.1:18010/v1/chat/completions | wc -c)
rss_sum() { local t=0 p; for p in "$@"; do t=$((t + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done; echo "$t"; }
# per_stream NAME URL PID...: KiB of RSS growth per open stream.
declare -A MEM MEMSTORED
per_stream() {
  local name=$1 url=$2 r0 r1 lgpid since; shift 2
  since=$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)
  bin/loadgen -url "$url" -keys "$keylist" -n 50 -c 10 -stream-ratio 1 -max-tokens 2 >/dev/null   # warm-up
  r0=$(rss_sum "$@")
  bin/loadgen -url "$url" -keys "$keylist" -n 500 -c 500 -stream-ratio 1 -max-tokens 40 >/dev/null &
  lgpid=$!; pids+=("$lgpid")
  sleep 4
  r1=$(rss_sum "$@")
  wait "$lgpid"; forget "$lgpid"
  MEM[$name]=$(awk -v a="$r0" -v b="$r1" 'BEGIN { printf "%.1f", (b - a) / 500 }')
  if [[ $name == llmtap* ]]; then
    local got; got=$(drain "$since" 550); sent=$((sent + 550))
    MEMSTORED[$name]="$got of 550"
    [ "$got" = 550 ] || lost+=("memory/$name: $got of 550 events stored")
  fi
  echo "bench: memory $name ${MEM[$name]} KiB/stream" >&2
}
per_stream llmtap http://127.0.0.1:18011 "${PID[serve18010]}"
per_stream llmtap-split http://127.0.0.1:18014 "${PID[proxy18010]}"
per_stream go-nethttp http://127.0.0.1:18017 "${PID[nethttp18010]}"
per_stream go-fasthttp http://127.0.0.1:18018 "${PID[fasthttp18010]}"
# shellcheck disable=SC2046
per_stream nginx http://127.0.0.1:18013 $(nginx_workers)
down 18010

total_rows=$(q "SELECT count(*) FROM llm_requests")
echo "bench: $total_rows rows stored for $sent requests sent through llmtap" >&2

# Live memory (heap + stack, no GC headroom) of 200 open streams in the Go benchmark.
phase "BenchmarkProxyStreamMemory"
gomem=$work/gomem.txt
go test ./proxy -run '^$' -bench ProxyStreamMemory -benchtime 3x -count 1 >"$gomem" 2>&1 || echo "bench: BenchmarkProxyStreamMemory failed (see report)" >&2
gm() { awk -v u="$1" '/^BenchmarkProxyStreamMemory/ { for (i = 2; i < NF; i++) if ($(i + 1) == u) { print $i; exit } }' "$gomem"; }
go_kib=$(gm KiB/stream); go_heap=$(gm heap-KiB/stream); go_stack=$(gm stack-KiB/stream)

# --- 4. Go benchmarks ----------------------------------------------------------------------
phase "Go benchmarks${BENCH_GO:+ (BENCH_GO=$BENCH_GO)}"
gobench=$work/gobench.txt
: >"$gobench"
if [ -n "${BENCH_HEAVY:-}" ]; then
  export LLMTAP_BENCH_ROWS=10000000 LLMTAP_BENCH_EXPORT_ROWS=10000000
else
  export LLMTAP_BENCH_ROWS=${LLMTAP_BENCH_ROWS:-200000}   # panel queries on a small table; 10 M with BENCH_HEAVY=1
fi
[ "${BENCH_GO:-1}" = 0 ] || go test -run '^$' -bench . -benchmem -benchtime "${BENCH_TIME:-1s}" -timeout 60m ./... 2>&1 | grep -E '^(Benchmark|ok|FAIL|pkg:|---)' | grep -v '^ok' >"$gobench" || true

# --- report ----------------------------------------------------------------------------------
# ratio A B: A / B, or n/a when either is missing or below zero (an added
# latency below zero is noise: the row ran faster than direct).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || a < 0 || b <= 0) print "n/a"; else printf "%.2f", a / b }'; }
added() { awk -v a="$(j "$1" p50_ms)" -v b="$(j "$2" p50_ms)" 'BEGIN { printf "%.2f", a - b }'; }
dash() { case $1 in direct) echo "—" ;; *) echo "$2" ;; esac; }
# disturbed KEY: " †" when the machine used over 1.5× (+50 µs/req) what the
# row's processes did, i.e. other work ran during the row.
disturbed() { awk -v m="${CM[$1]}" -v t="${CT[$1]}" 'BEGIN { if (m > 1.5 * t + 50) printf " †" }'; }
dagger_note="† machine CPU above 1.5× the row's total: other work on the machine ran during this row, so its req/s and latencies are disturbed (its per-process CPU much less so)."
# table SCEN TTFB_HEADER
table() {
  local scen=$1 k
  echo "| mode | path | req/s | p50 ms | p99 ms | $2 p50 ms | added p50 ms vs direct | req/s vs nginx | proxy CPU µs/req | ingest CPU µs/req | store CPU µs/req | total CPU µs/req | machine CPU µs/req |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for mode in nonstream stream; do
    for path in "${paths[@]}"; do
      k=$scen/$mode/$path
      echo "| $mode | $path | $(printf '%.0f' "$(j "$k" rps)") | $(j "$k" p50_ms) | $(j "$k" p99_ms) | $(j "$k" ttfb_p50_ms) | $(added "$k" "$scen/$mode/direct") | $(ratio "$(j "$k" rps)" "$(j "$scen/$mode/nginx" rps)") | $(dash "$path" "${CP[$k]}") | $([ "$path" = llmtap-split ] && echo "${CI[$k]}" || echo "—") | ${CG[$k]} | ${CT[$k]} | ${CM[$k]}$(disturbed "$k") |"
    done
  done
}
# bound NGINX_KEY SPLIT_KEY: the throughput / nginx's that a proxy costing no
# CPU at all would reach on these cores with llmtap's capture pipeline (the
# split row's ingest and store CPU): nginx total / (nginx total - nginx's
# proxy + ingest + store). At saturation req/s is cores / total CPU per request.
bound() {
  awk -v t="${CT[$1]}" -v p="${CP[$1]}" -v i="${CI[$2]}" -v g="${CG[$2]}" 'BEGIN { d = t - p + i + g; if (d > 0) printf "%.2f", t / d; else print "n/a" }'
}
# goals SCEN: the issue #2 ratios per mode.
goals() {
  local scen=$1 mode d n l s b f
  for mode in nonstream stream; do
    d=$scen/$mode/direct n=$scen/$mode/nginx l=$scen/$mode/llmtap s=$scen/$mode/llmtap-split b=$scen/$mode/go-nethttp f=$scen/$mode/go-fasthttp
    echo "- $mode: throughput / nginx: llmtap serve $(ratio "$(j "$l" rps)" "$(j "$n" rps)"), llmtap-split $(ratio "$(j "$s" rps)" "$(j "$n" rps)") (goal ≥ 1.0);" \
      "added p50 / nginx's: llmtap serve $(ratio "$(added "$l" "$d")" "$(added "$n" "$d")"), llmtap-split $(ratio "$(added "$s" "$d")" "$(added "$n" "$d")") (goal ≤ 1.2);" \
      "proxy-process CPU µs/req / nginx's: llmtap serve $(ratio "${CP[$l]}" "${CP[$n]}") (its process also decodes and writes events), llmtap proxy $(ratio "${CP[$s]}" "${CP[$n]}")"
    echo "  - Go floors (nginx's work, no capture): throughput / nginx's: go-nethttp $(ratio "$(j "$b" rps)" "$(j "$n" rps)"), go-fasthttp $(ratio "$(j "$f" rps)" "$(j "$n" rps)");" \
      "proxy CPU µs/req / nginx's: go-nethttp $(ratio "${CP[$b]}" "${CP[$n]}"), go-fasthttp $(ratio "${CP[$f]}" "${CP[$n]}");" \
      "llmtap against go-nethttp (its server's stack): throughput llmtap serve $(ratio "$(j "$l" rps)" "$(j "$b" rps)"), llmtap-split $(ratio "$(j "$s" rps)" "$(j "$b" rps)"), llmtap proxy's CPU µs/req $(ratio "${CP[$s]}" "${CP[$b]}")"
    if [ "$scen" = nodelay ]; then   # CPU-bound rows only
      echo "  - ceiling with capture on: a proxy costing no CPU, plus llmtap's measured capture pipeline (ingest + store CPU of the llmtap-split row) on these cores, would reach $(bound "$n" "$s") × nginx's throughput"
    fi
  done
}
stored_lines() {
  local scen=$1 mode path out=()
  for mode in nonstream stream; do
    for path in llmtap llmtap-split; do out+=("$mode $path ${ST[$scen/$mode/$path]}"); done
  done
  local joined; joined=$(printf '%s; ' "${out[@]}"); echo "${joined%; }"
}
{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` (scripts/bench.sh) on $(date -u +%Y-%m-%d), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(go version | cut -d' ' -f3)."
  echo "Every row of a table is measured in the same run on the same machine; ratios compare rows of that run."
  echo
  echo "Goals (issue #2): llmtap's throughput ≥ nginx's and added p50 ≤ 1.2× nginx's with capture on; ≤ 32 KiB per open stream beyond captured bytes."
  echo
  echo "## What the numbers mean"
  echo
  echo "On this $(nproc)-core box loadgen, vllm-sim, the proxy under test and PostgreSQL share the cores. With no upstream delay every"
  echo "row is CPU-bound, so req/s is roughly cores ÷ total CPU per request: llmtap's rows also pay for PostgreSQL committing every"
  echo "event on the same cores, while nginx stores nothing. The req/s and latency ratios against nginx therefore mix the proxy's"
  echo "cost with the store's; the CPU columns show the split. With vLLM-like timings the rows are latency-bound (the upstream paces"
  echo "tokens), as in the deployment the goals are about; vllm-sim's timers share the cores too, so a proxy's CPU can delay the"
  echo "tokens themselves (a stream's added p50 sums such delays over 64 tokens, TTFT over one)."
  echo
  echo "- **proxy CPU**: the process under test (llmtap's or the baseline's one process; nginx's master and workers). For llmtap serve it includes"
  echo "  decoding the captured events and the PostgreSQL client, which llmtap-split moves to \`llmtap ingest\` (**ingest CPU**)."
  echo "- **store CPU**: PostgreSQL's backends of the bench database, postmaster and background processes (other databases'"
  echo "  backends are left out; the figure over every postgres process is in the per-row detail)."
  echo "- **total CPU**: all of the above plus vllm-sim and loadgen (its cpu_seconds)."
  echo "- **machine CPU**: all CPU the machine used (/proc/stat without steal) over the same window; what it has beyond total is"
  echo "  kernel time charged to no process and other work on the machine (rows marked †)."
  echo "- CPU is utime+stime from /proc in 1/$TCK s ticks, from just before a row's run until every event of an llmtap row is in"
  echo "  PostgreSQL. A row starts once the machine is under 25 % busy (waiting at most 10 s, 40 s per run)."
  echo
  echo "## Proxy, no upstream delay: direct vs llmtap vs nginx"
  echo
  echo "loadgen, $N requests per row (after 300 warm-up requests), $C concurrent clients, 4 consumers, vllm-sim with no artificial delay (16 tokens)."
  echo "llmtap: \`llmtap serve\` (capture on, every event committed to PostgreSQL) and llmtap-split: \`llmtap proxy\` shipping gzip NDJSON"
  echo "batches to a separate \`llmtap ingest\` that writes to the same PostgreSQL database."
  echo "nginx: \`map\` of Bearer keys to names, \`if (\$client = \"\") return 401\`, \`proxy_buffering off\`, upstream keepalive."
  echo "go-nethttp and go-fasthttp (cmd/baseline): the same configuration as nginx in Go, capturing nothing, on the standard library's"
  echo "server, httputil.ReverseProxy and Transport (llmtap's server is net/http; its upstream client, proxy/upstream, is its own) and"
  echo "on valyala/fasthttp: the floors of a Go proxy on each stack, so that llmtap's own cost, its stack's, and what another stack"
  echo "would change can be told apart."
  echo
  table nodelay "TTFB"
  echo
  echo "$dagger_note"
  echo
  goals nodelay
  echo "- events stored (warm-ups included): $(stored_lines nodelay)"
  echo "- peak RSS during these runs: llmtap serve $((rss_serve_kb / 1024)) MiB, llmtap proxy $((rss_proxy_kb / 1024)) MiB"
  echo
  echo "## Proxy, vLLM-like timings"
  echo
  echo "vllm-sim \`--ttft 50ms --token-interval 10ms --tokens 64\`, loadgen \`-max-tokens 64\`, $NR requests per row (after $CR warm-up requests), $CR concurrent clients."
  echo "Same paths and configuration as above. TTFT is the first byte of the body: for a stream the first SSE event, for non-stream the whole answer."
  echo
  table vllm "TTFT"
  echo
  echo "$dagger_note"
  echo
  goals vllm
  echo "- events stored (warm-ups included): $(stored_lines vllm)"
  echo "- llmtap ingest peak RSS over both scenarios: $((rss_ingest_kb / 1024)) MiB"
  echo
  echo "## Memory per open stream"
  echo
  echo "500 concurrent slow streams (vllm-sim: 40 tokens, 200 ms apart), RSS of the proxy's processes sampled 4 s in, minus the RSS"
  echo "after a warm-up, divided by 500. A whole 40-token stream is $stream_bytes bytes, so each stream has about $((stream_bytes / 2048)) KiB"
  echo "captured at the sample. RSS includes the Go runtime's GC headroom (up to GOGC=100 % of the live heap); the Go benchmark"
  echo "counts live heap + goroutine stacks only (200 streams, proxy minus direct, \`go test ./proxy -run '^\$' -bench ProxyStreamMemory -benchtime 3x\`)."
  echo
  echo "| proxy | method | KiB per open stream |"
  echo "|---|---|---:|"
  echo "| llmtap serve | RSS growth / 500 | ${MEM[llmtap]} |"
  echo "| llmtap proxy (split) | RSS growth / 500 | ${MEM[llmtap-split]} |"
  echo "| go-nethttp (no capture) | RSS growth / 500 | ${MEM[go-nethttp]} |"
  echo "| go-fasthttp (no capture) | RSS growth / 500 | ${MEM[go-fasthttp]} |"
  echo "| nginx (sum of workers) | RSS growth / 500 | ${MEM[nginx]} |"
  echo "| llmtap proxy package | Go heap + stack / 200 | ${go_kib:-n/a} (heap ${go_heap:-n/a}, stack ${go_stack:-n/a}) |"
  echo
  verdict=n/a
  [ -n "$go_kib" ] && verdict=$(awk -v k="$go_kib" 'BEGIN { print (k <= 32 ? "met" : "not met") }')
  echo "Goal: ≤ 32 KiB per open stream beyond captured bytes: live memory (heap + stacks) ${go_kib:-n/a} KiB, ${verdict}; RSS adds the GC's headroom over the live heap (README: Tuning). Events of these streams stored: llmtap serve ${MEMSTORED[llmtap]}, llmtap-split ${MEMSTORED[llmtap-split]}."
  [ -n "$go_kib" ] || { echo; echo "BenchmarkProxyStreamMemory did not report:"; echo '```'; tail -20 "$gomem"; echo '```'; }
  echo
  echo "## Events stored"
  echo
  echo "$total_rows rows in llm_requests for $sent requests sent through llmtap (warm-ups and memory runs included)."
  if [ ${#lost[@]} -gt 0 ]; then
    echo "**Events were lost** (the count stopped growing short of the requests sent):"
    for l in "${lost[@]}"; do echo "- $l"; done
  else
    echo "Every request through llmtap was stored."
  fi
  echo
  echo "## Per-row detail"
  echo
  echo "CPU per row in run order, µs per request (store: the bench database's backends and PostgreSQL's background processes):"
  echo '```'
  for k in "${order[@]}"; do echo "${CD[$k]}"; done
  echo '```'
  echo
  echo "Raw loadgen summaries:"
  echo '```'
  for k in "${order[@]}"; do echo "${R[$k]}"; done
  echo '```'
  echo
  echo "## Go benchmarks"
  echo
  echo "\`go test -run '^\$' -bench . -benchmem -benchtime ${BENCH_TIME:-1s} ./...\` (panel queries over \$LLMTAP_BENCH_ROWS=${LLMTAP_BENCH_ROWS} rows; 10 M rows and the 10 M-row export only with BENCH_HEAVY=1 — the last heavy results are in [dashboards/BENCHMARKS.md](dashboards/BENCHMARKS.md) and [query/README.md](query/README.md)). Ingest benchmarks report events/s next to the database's own ceiling measured in the same run."
  echo
  echo '```'
  if [ -s "$gobench" ]; then cat "$gobench"; else echo "(not run: BENCH_GO=0)"; fi
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
phase "wrote $OUT"
if [ ${#lost[@]} -gt 0 ]; then printf 'bench: LOST EVENTS: %s\n' "${lost[@]}" >&2; fi
