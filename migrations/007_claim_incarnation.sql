-- 007_claim_incarnation.sql: which process incarnation holds a job's claim
-- (dispatcher/coordinator.c). claimed_by is the configured --id; a dispatcher
-- restarted under the same id sees its dead incarnation's claims by a
-- different claimed_incarnation and takes them over at once. jobs.result is
-- now written while the job is still 'completing', before the result is
-- published, so a takeover publishes exactly that stored body.
ALTER TABLE jobs ADD COLUMN claimed_incarnation text;
