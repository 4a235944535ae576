#!/usr/bin/env bash
# Store write benchmarks: events/s into PostgreSQL and ClickHouse with
# realistic records (2–8 KB of bodies, 70 % streamed), batch sizes 1000 and
# 5000, each interleaved with the database's own ceiling measured in the same
# run (PostgreSQL: binary COPY into a table with the same indexes; ClickHouse:
# plain column-wise batch insert into a plain MergeTree). Needs the services
# of scripts/services.sh. The ratios (copy/ceiling, store/ceiling) are what
# to compare; absolute rates depend on what else the machine is doing, so
# the load average is printed next to them.
#
#   BENCH_ROUNDS   rounds per batch size (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
rounds=${BENCH_ROUNDS:-20}

echo "# $(date -u +%FT%TZ) $(nproc) CPUs; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
go test -run '^$' -bench 'BenchmarkWritePostgres' -benchtime="${rounds}x" -timeout 30m ./ingest/store/postgres | grep -E '^(Benchmark|ok|FAIL)'
echo "# load average: $(cut -d' ' -f1-3 /proc/loadavg)"
go test -run '^$' -bench 'BenchmarkWriteClickHouse' -benchtime="${rounds}x" -timeout 30m ./ingest/store/clickhouse | grep -E '^(Benchmark|ok|FAIL)'
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
