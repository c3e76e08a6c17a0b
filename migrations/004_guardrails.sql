-- 004_guardrails.sql: the guard stage's record of each guarded job (docs/guardrails.md).
-- decision: what the guard did (provider access, reroute, scrubbed types and
-- counts, moderation verdicts), never values. mask: the token -> original
-- value mapping of a masked request whose output is to be restored; personal
-- data, so no view and no grant exposes this table (finance reads through the
-- finance_* views only), and the dispatcher deletes the row once the job's
-- result is durable. No foreign key: the row is written before the job row,
-- so a job is never published without it.
CREATE TABLE job_guardrails (
    request_id      text PRIMARY KEY,
    tenant_id       text NOT NULL,
    decision        jsonb NOT NULL,
    mask            jsonb,
    restore         boolean NOT NULL DEFAULT false,
    moderate_output boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_guardrails_created ON job_guardrails (created_at);
REVOKE ALL ON job_guardrails FROM PUBLIC;
