-- 020_cancel.sql: cancellation and queue time limits (docs/scheduling.md).
-- tasks.status gains 'running' (a worker passed the start gate: workers/gate.c)
-- and 'cancelled' (never started: the cancel came first). started_at: when the
-- gate let it start. jobs.cancelled_at / cancel_reason: a cancel was accepted;
-- workers abort the job's running tasks when they see it.
ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('pending', 'queued', 'running', 'succeeded', 'failed', 'expired',
                      'cancelled'));
ALTER TABLE tasks ADD COLUMN started_at timestamptz;
ALTER TABLE jobs ADD COLUMN cancelled_at timestamptz, ADD COLUMN cancel_reason text;
CREATE INDEX tasks_unfinished ON tasks (request_id)
    WHERE status IN ('pending', 'queued', 'running');
CREATE INDEX jobs_cancelled ON jobs (request_id) WHERE cancelled_at IS NOT NULL;
-- A cancel that comes before its request was taken in (the control topic is
-- read apart from the requests topic) is kept here; the start gate treats a
-- job named here as cancelled, so its tasks report cancelled without running.
CREATE TABLE job_cancels (
    request_id   text PRIMARY KEY,
    reason       text,
    requested_at timestamptz NOT NULL DEFAULT now()
);
