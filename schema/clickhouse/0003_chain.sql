-- Tamper evidence (ingest/store/chain): a hash chain beside the data.
--
-- llm_requests.chain_batch: the batch (link of llm_chain) that wrote the row;
-- 0 = written before chaining (this migration) or outside llmtap.
-- text_hash / body_hash: hex SHA-256 of the erasable content as written
-- (text: prompt, response, reasoning, tool_calls; body: request_body,
-- response_body). They stay when erasure or retention clears the content.
-- 18.16 has no ADD COLUMN IF NOT EXISTS: schema.Migrate treats "column
-- already exists" on ADD COLUMN as done, so this file can run again.
ALTER TABLE llm_requests ADD COLUMN chain_batch Int64 DEFAULT 0;
ALTER TABLE llm_requests ADD COLUMN text_hash String DEFAULT '';
ALTER TABLE llm_requests ADD COLUMN body_hash String DEFAULT '';

-- llm_chain: one link per committed batch, erasure or retention run,
-- append-only. Times as in llm_requests: DateTime seconds plus the
-- microseconds within the second.
CREATE TABLE IF NOT EXISTS llm_chain (
    seq        Int64,
    kind       String,
    batch      Int64,
    prev_hash  String,
    hash       String,
    rows       Int64,
    min_ts     DateTime('UTC'),
    min_ts_us  UInt32,
    max_ts     DateTime('UTC'),
    max_ts_us  UInt32,
    created_at DateTime('UTC'),
    details    String
) ENGINE = MergeTree
ORDER BY seq;

-- llm_chain_start: when chaining began, and how many rows (up to which ts,
-- in microseconds) were stored before it. verify reports such rows
-- (chain_batch 0, ts up to legacy_max_us) as unchained instead of as added.
-- One row, written once (IF NOT EXISTS skips the SELECT on a re-run).
CREATE TABLE IF NOT EXISTS llm_chain_start ENGINE = Log AS
SELECT now() AS started_at, count() AS legacy_rows,
       max(toInt64(ts) * 1000000 + ts_us) AS legacy_max_us
FROM llm_requests;
