-- Compress the large text columns with lz4 instead of pglz where the server
-- supports it (PostgreSQL 14+ built with lz4, as Debian's and the official
-- images are). lz4 compresses several times faster at a similar ratio, which
-- is what bounds COPY of 2–8 KB audit rows. Older servers or builds without
-- lz4 keep pglz; both read back the same. Only new values are affected.
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 140000 THEN
        EXECUTE 'ALTER TABLE llm_requests'
            ' ALTER COLUMN prompt SET COMPRESSION lz4,'
            ' ALTER COLUMN response SET COMPRESSION lz4,'
            ' ALTER COLUMN reasoning SET COMPRESSION lz4,'
            ' ALTER COLUMN tool_calls SET COMPRESSION lz4,'
            ' ALTER COLUMN request_headers SET COMPRESSION lz4,'
            ' ALTER COLUMN response_headers SET COMPRESSION lz4,'
            ' ALTER COLUMN request_body SET COMPRESSION lz4,'
            ' ALTER COLUMN response_body SET COMPRESSION lz4';
        EXECUTE 'ALTER TABLE llm_rejects ALTER COLUMN payload SET COMPRESSION lz4';
    END IF;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 compression not available, keeping pglz: %', SQLERRM;
END
$$;
