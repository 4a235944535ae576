#!/usr/bin/env bash
# Runs the reliability scenarios of issue 7 in their full length
# (LLMTAP_CHAOS=full: thousands of requests, several kills, minute-long store
# outages, 1000 slowloris connections) against the real PostgreSQL and
# ClickHouse, and prints the figures of every scenario as a table.
#
#   scripts/chaos.sh                 # all scenarios, full length
#   scripts/chaos.sh KillIngest      # only scenarios whose test name matches
#   CHAOS=short scripts/chaos.sh     # the short versions `make test` runs
#
# The raw figures (one JSON object per scenario) are kept in
# data/chaos/last.jsonl and the test log in data/chaos/last.log; RELIABILITY.md
# is written from them. Exit status: that of `go test`.
set -uo pipefail
cd "$(dirname "$0")/.."

filter="${1:-}"
mode="${CHAOS:-full}"
out=data/chaos
mkdir -p "$out"
report="$PWD/$out/last.jsonl"
logf="$PWD/$out/last.log"
: >"$report"

if [[ -z "${SKIP_SERVICES:-}" ]]; then
  ./scripts/services.sh
fi

env_mode=()
[[ "$mode" == full ]] && env_mode=(LLMTAP_CHAOS=full)

echo "chaos: mode=$mode go=$(go version | awk '{print $3}') commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')" >&2
start=$(date +%s)
env "${env_mode[@]}" LLMTAP_CHAOS_REPORT="$report" \
  go test -count=1 -timeout 60m -v -run "TestReliability${filter}" ./cmd/llmtap >"$logf" 2>&1
rc=$?
echo "chaos: go test exit $rc after $(( $(date +%s) - start )) s; log: $logf" >&2

grep -E '^(--- |=== RUN|ok|FAIL|PASS)' "$logf" | grep -E '^(--- |ok|FAIL)' >&2 || true

# Figures table.
if command -v jq >/dev/null 2>&1; then
  printf '| scenario | store | sent | acked | lost | dupes | corrupt | compared | drop counter | recovery s | peak RSS MiB | note |\n'
  printf '|---|---|---|---|---|---|---|---|---|---|---|---|\n'
  jq -r '"| \(.scenario) | \(.store) | \(.sent) | \(.acked) | \(.lost) | \(.duplicates) | \(.corrupt) | \(.compared) | \(.drop_counter) | \(.recovery_s*10|round/10) | \(.peak_rss_mb // 0 | .*10|round/10) | \(.note // "") |"' "$report"
else
  cat "$report"
fi
exit $rc
