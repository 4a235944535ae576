-- Tamper evidence (ingest/store/chain): a hash chain beside the data.
--
-- llm_requests.chain_batch: the batch (link of llm_chain) that wrote the row;
-- 0 = written before chaining (this migration) or outside llmtap.
-- text_hash / body_hash: hex SHA-256 of the erasable content as written
-- (text: prompt, response, reasoning, tool_calls; body: request_body,
-- response_body). They stay when erasure or retention clears the content,
-- so the row still verifies.
ALTER TABLE llm_requests ADD COLUMN IF NOT EXISTS chain_batch bigint NOT NULL DEFAULT 0;
ALTER TABLE llm_requests ADD COLUMN IF NOT EXISTS text_hash   text   NOT NULL DEFAULT '';
ALTER TABLE llm_requests ADD COLUMN IF NOT EXISTS body_hash   text   NOT NULL DEFAULT '';

-- llm_chain: one link per committed batch, erasure or retention run,
-- append-only. hash = SHA-256 over (prev_hash, seq, kind, batch, rows,
-- min/max ts, created_at, details, digest of the batch's rows); see the
-- ingest/store/chain package documentation for the exact encoding.
CREATE TABLE IF NOT EXISTS llm_chain (
    seq        bigint      NOT NULL PRIMARY KEY,
    kind       text        NOT NULL,
    batch      bigint      NOT NULL DEFAULT 0,
    prev_hash  text        NOT NULL,
    hash       text        NOT NULL,
    rows       bigint      NOT NULL DEFAULT 0,
    min_ts     timestamptz NOT NULL,
    max_ts     timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    details    text        NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS llm_chain_batch_idx ON llm_chain (batch);
CREATE INDEX IF NOT EXISTS llm_chain_max_ts_idx ON llm_chain (max_ts);

-- llm_chain_start: when chaining began, and how many rows (up to which ts)
-- were stored before it. verify reports such rows (chain_batch 0, ts up to
-- legacy_max_ts) as unchained instead of as added. One row, written once.
CREATE TABLE IF NOT EXISTS llm_chain_start (
    started_at    timestamptz NOT NULL,
    legacy_rows   bigint      NOT NULL,
    legacy_max_ts timestamptz
);
INSERT INTO llm_chain_start (started_at, legacy_rows, legacy_max_ts)
SELECT now(), count(*), max(ts) FROM llm_requests
WHERE NOT EXISTS (SELECT 1 FROM llm_chain_start);
