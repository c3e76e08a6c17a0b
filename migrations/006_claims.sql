-- 006_claims.sql: who is finishing a job, and since when (dispatcher/coordinator.c).
-- A coordinator that claims a job (status 'completing') records itself; another
-- one takes the claim over only once it is older than dispatcher.claim_timeout_ms,
-- so a job whose task-results partition moved mid-publish gets one result, and
-- a job whose claimant died is finished by the coordinators' sweep.
ALTER TABLE jobs ADD COLUMN claimed_by text, ADD COLUMN claimed_at timestamptz;
CREATE INDEX jobs_completing ON jobs (claimed_at) WHERE status = 'completing';
