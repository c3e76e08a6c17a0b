-- 009_answer_usage.sql: the usage event that goes with an answer intake
-- stores as a job's result (a response-cache hit; dispatcher/intake.c), so
-- that whoever publishes the stored answer (intake, or the coordinator's
-- claim sweep after intake died) publishes its charge with it. NULL for
-- answers that charge nothing (rejections).
ALTER TABLE jobs ADD COLUMN answer_usage jsonb;
