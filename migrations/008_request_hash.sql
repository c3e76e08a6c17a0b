-- 008_request_hash.sql: the SHA-256 (lowercase hex) of the request as received
-- (canonical JSON: compact, sorted keys, before the guard stage scrubs it), so
-- that a re-send of a request_id with a different body is told from an exact
-- duplicate (dispatcher/intake.c: duplicate_conflict). NULL for jobs stored
-- before this migration: their re-sends count as identical.
ALTER TABLE jobs ADD COLUMN request_sha256 text;
