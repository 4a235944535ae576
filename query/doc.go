// Package query runs llmtap's named audit queries and compliance exports
// against the store (PostgreSQL or ClickHouse, chosen by the DSN's scheme).
//
// # Named queries
//
// Names lists them: usage, rpm, daily, errors, conversations, search and
// activity. Their SQL lives in embedded files, query/sql/postgres/NAME.sql and
// query/sql/clickhouse/NAME.sql, written so that an auditor can run the very
// same file by hand (each file's header comment shows the psql or
// clickhouse-client command line). The two dialects return the same columns,
// the same rows in the same order and the same values for the same data; a
// test seeds both stores identically and compares every query.
//
// Placeholders: the PostgreSQL files use psql variables (:'from'), which Run
// turns into bind parameters ($1, $2, …); the ClickHouse files use
// ClickHouse's query-parameter syntax ({from:DateTime}), which Run replaces by
// literals it renders and escapes itself, because ClickHouse 18.16 has no
// server-side parameters. Either way a filter value cannot change the query.
//
// Conventions shared by all queries: the window is [From, To) on ts with
// whole-second bounds (fractions are dropped, so PostgreSQL's microsecond ts
// and ClickHouse's ts + ts_us select the same rows); an empty Consumer or KeyID
// means all; times are returned as UTC RFC 3339 text; latency percentiles are
// PostgreSQL's percentile_cont arithmetic on both dialects, rounded half up
// to 0.001 ms with the same floating-point operations (so the results are the
// same double, not merely close); on ClickHouse every query reads with FINAL so that an event stored
// twice (a replay before the background merge) is counted once.
//
// # Exports
//
// Export streams every column of llm_requests in a window to a JSONL or CSV
// file with constant memory, hashing while it writes, and writes a manifest
// (FILE.manifest.json) with the row count, SHA-256, filters, range and the
// store (without its password). Files appear only complete: both are written
// to temporary files and renamed.
package query
