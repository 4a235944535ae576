// Package chain makes llm_requests tamper-evident: every batch a store
// commits extends a hash chain kept beside the data (table llm_chain);
// Verify recomputes it from the rows and names the first link and time
// range whose rows were changed, added or removed outside llmtap. Erasure
// (Erase) and retention (Retention, RunRetention) record their own links,
// so the content and rows they remove verify as legitimate.
//
// # What is stored (schema migration 0003, both dialects)
//
// llm_requests gains three columns, written by the stores' Write:
//
//   - chain_batch: a random positive 63-bit id of the batch that wrote the
//     row (0: written before migration 0003, or not by llmtap);
//   - text_hash: hex SHA-256 of prompt, response, reasoning, tool_calls;
//   - body_hash: hex SHA-256 of request_body, response_body.
//
// llm_chain holds one link per committed batch, erasure and retention run:
// seq (1, 2, 3, … without gaps), kind ("batch", "erasure", "retention"),
// batch (the rows' chain_batch, for batch links), prev_hash, hash, rows,
// min_ts and max_ts (the batch's ts range, or the window an erasure or
// retention run covered), created_at (whole seconds) and details (JSON, for
// erasure and retention links). The table is append-only: nothing in llmtap
// updates or deletes a link, retention included. llm_chain_start records,
// once, how many rows were stored before chaining began.
//
// # Encoding (what an auditor recomputes)
//
// Every value is encoded deterministically and hashed with SHA-256: a
// string as its byte length (8 bytes, big endian) then its bytes; an
// integer as 8 bytes big endian (two's complement); a bool as one byte
// 0/1; a float64 as its IEEE-754 bits (8 bytes, big endian), with -0
// written as +0 and every NaN as Go's math.NaN(); a nullable value as a
// bool "present" followed, if present, by the value; a time as its
// microseconds since the Unix epoch (the precision both stores keep;
// ClickHouse holds ts as DateTime seconds plus ts_us). Each hash starts
// with a domain tag string ("llmtap-text-v1", "llmtap-body-v1",
// "llmtap-row-v1", "llmtap-rows-v1", "llmtap-link-v1").
//
//	text_hash = H("llmtap-text-v1", prompt, response, reasoning, tool_calls)
//	body_hash = H("llmtap-body-v1", request_body, response_body)
//	row       = H("llmtap-row-v1", event_id (16 raw bytes), ts, source, consumer,
//	              key_id, key_prefix, client_ip, method, path, request_id,
//	              endpoint, model, status, stream, latency_ms, ttfb_ms?, ttft_ms?,
//	              prompt_tokens?, completion_tokens?, total_tokens?, usage_source,
//	              finish_reason, error, request_headers, response_headers,
//	              truncated, text_hash, body_hash)
//	rows      = H("llmtap-rows-v1", n, then for each row sorted by event_id:
//	              event_id (16 bytes) ‖ row (32 bytes))
//	link      = H("llmtap-link-v1", prev_hash, seq, kind, batch, rows count,
//	              min_ts, max_ts, created_at (seconds), details, rows digest
//	              (32 bytes; zeros for erasure and retention links))
//
// ingested_at is not covered (it is when ingest stored the row, not what
// happened). Every covered column reads back bit-identically from
// PostgreSQL (binary protocol) and ClickHouse (native protocol).
//
// # Write path
//
// A link covers exactly the rows its Write inserted: rows skipped because
// their event_id was already stored (idempotent replays) belong to the
// link that first wrote them, and a Write that inserted nothing appends no
// link.
//
// PostgreSQL: the rows (binary COPY) and the link are one transaction.
// Before appending, the writer takes pg_advisory_xact_lock(0x6c6c6d7461706368)
// and reads the head (highest seq); the lock is held until commit, so
// appends from any number of processes form one linear chain. Only the
// link append and the commit are serialized; the COPY runs concurrently.
//
// ClickHouse: no transactions. The store inserts the rows (carrying their
// chain_batch), then appends the link under a process-wide mutex: read the
// head (the first time max(seq) over the table; after that only the links
// from the last seq this connection pool saw, which the primary key ORDER
// BY seq serves from the last granule, so links appended by another
// process, such as an erasure, are picked up) and insert the link. A crash between the two leaves
// rows whose link is missing; Verify reports them as "link missing" ("N
// rows of batch B without a link (crash between rows and link, or
// tampering)"), distinct from a changed chain. The window is one INSERT of
// one small row. The mutex serializes appends within one process only: run
// one ingest process per ClickHouse table (as the store's idempotency
// already asks); two appenders would write two links with one seq, which
// Verify reports as "chain broken". Erase and Retention run from the CLI
// append with the same read-head-then-insert step, so an erasure racing an
// ingest batch on ClickHouse can, rarely, fork the chain; run them when
// ingest is idle, or from the serving process.
//
// Cost, measured on a shared 2-core machine (BenchmarkWrite*, realistic
// 2–8 KB rows, runs of the code before and after interleaved): hashing is
// about 5 µs per row (BenchmarkFromRecord; SHA-256 of the bodies
// dominates) and runs concurrently with the server round trips (PostgreSQL:
// lookup and COPY; ClickHouse: the existence check); a ClickHouse link
// append costs about 5 ms per batch (a head query and a one-row insert).
// Events per second went down 4–12 % (PostgreSQL) and 0–7 % (ClickHouse),
// CPU per event (client plus server) up 13–15 % on both.
//
// # Verify
//
// Verify(ctx, dsn, from, to) first streams all links in seq order and checks
// continuity: seq starts at 1 without gaps or duplicates, every prev_hash
// equals the previous link's hash, and every erasure and retention link's
// hash matches its fields. Then it reads the rows of the window once (all
// rows without a window; with one, the ts range of the batch links that
// overlap [from, to], widened to hold them whole) and, per batch link,
// recomputes the rows digest and the link hash. A mismatch names the link
// (seq, batch, its min_ts..max_ts) with a reason:
//
//   - "row missing": fewer rows carry the batch than the link counts;
//   - "row added": more rows, or a row with chain_batch 0 dated after
//     chaining began, or a row whose link's time range does not hold it;
//   - "row changed": same count, different rows (a metadata column, ts,
//     chain_batch or a hash column edited), or content that no longer
//     matches its text_hash/body_hash;
//   - "link missing": rows whose chain_batch names no link;
//   - "chain broken": gaps, duplicates, a prev_hash or a link's own hash
//     that does not match.
//
// Report.FirstBad is the earliest problem by time range (then seq);
// Report.Problems lists up to MaxProblems of them. Moving a row from one
// batch to another, or swapping two batches' rows, shows as "row missing"
// at one link and "row added" at the other.
//
// Legitimate removals: content is accepted when it matches its hashes, or
// when it is empty and an erasure link lists the row's event_id (text and
// bodies), or when the bodies are empty and the row is older than the
// latest bodies cutoff of a retention link. A batch link whose rows are
// all gone is accepted when a later retention link's rows cutoff is after
// the link's max_ts; a batch with only some rows gone is always reported.
// Rows with chain_batch 0 dated no later than the newest row stored before
// migration 0003 are counted as Report.Unchained (pre-chain data), not as
// tampering, up to the number recorded in llm_chain_start.
//
// Cost: verify is O(rows) in time; memory is 48 bytes per row of the
// window plus the links (about 100 bytes each). Verify a large store by
// month with from/to (about 50 MB per million rows).
//
// # Erasure
//
// Erase(ctx, dsn, consumer, from, to) clears prompt, response, reasoning,
// tool_calls, request_body and response_body of the consumer's rows in
// [from, to) and appends an erasure link whose details hold the consumer,
// the window, the count and the sorted erased event ids. That link is the
// audit record of the erasure itself (Links(ctx, dsn, KindErasure, …)
// lists them); metadata, token counts and the rows' hashes stay, so counts
// and the chain are unchanged. PostgreSQL: one transaction. ClickHouse:
// the link is written first (intent), then ALTER TABLE … UPDATE mutations
// with literal conditions (on 18.16 a mutation with a subquery fails
// forever and blocks all later mutations of the table), and Erase waits
// for system.mutations to report them done. A crash after the link leaves
// content that still matches its hashes, which verifies; run Erase again.
//
// # Retention
//
// Retention(ctx, dsn, Policy{Bodies, Metadata}, now) clears request_body and
// response_body of rows older than now-Bodies, and deletes whole batches:
// the rows of every batch link whose max_ts is older than now-Metadata (and
// unchained rows older than it). Deleting by whole links is what lets
// Verify tell retention from tampering exactly. One retention link records
// both cutoffs and counts. ClickHouse uses ALTER TABLE … DELETE/UPDATE
// mutations with literal batch ids (intent link first, as for erasure).
// TTL clauses (ClickHouse ≥ 19.6) or dropping monthly partitions would be
// cheaper, but they delete by row ts and without a link, so verify could not
// tell them from tampering; a partition whose batches are all past the
// cutoff could be dropped instead of mutated, a later optimisation.
// RunRetention runs it periodically and exports llmtap_retention_runs_total,
// llmtap_retention_rows_deleted_total, llmtap_retention_bodies_cleared_total
// and llmtap_retention_last_success_timestamp_seconds.
//
// # What the chain does not prove
//
// The chain is unkeyed: someone with write access to both tables who
// rewrites rows and recomputes every later link leaves a chain that
// verifies. Report.Head (seq and hash of the last link) is the anchor:
// copy it regularly to a place the database's users cannot rewrite (a
// WORM bucket, a ticket, a signed e-mail); a later Verify whose chain no
// longer holds that seq with that hash proves a rewrite. Database grants
// (INSERT and SELECT only for the ingest role) are defence in depth.
// Rows that ClickHouse's ReplacingMergeTree collapses (two copies of one
// event written by two processes at once) show as "row missing" at one of
// the two links after the merge.
package chain
