-- 050_result_stored_at.sql: when the coordinator stored the job's final
-- result (dispatcher/coordinator.c), so that whoever takes over a dead
-- holder's claim can tell whether that holder published it before dying: it
-- reads gantry.results back to this time, and publishes only if it is not
-- there. NULL for results stored before this migration (taken as the job's
-- creation time).
ALTER TABLE jobs ADD COLUMN result_stored_at timestamptz;
