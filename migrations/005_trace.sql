-- 005_trace.sql: W3C trace context kept with jobs and usage (docs/observability.md, Tracing).
-- jobs.traceparent: the dispatcher's intake span of the request; the coordinator
-- publishes the job's result under it, whichever task finished last.
-- usage.trace_id: the trace of the request a usage event was billed for.
ALTER TABLE jobs ADD COLUMN traceparent text;
ALTER TABLE usage ADD COLUMN trace_id text;
