-- 001_init.sql: jobs and their task graphs (dispatcher state) and billable usage (ledger).

CREATE TABLE jobs (
    request_id       text PRIMARY KEY,              -- idempotency key of the request
    tenant_id        text NOT NULL,
    kind             text NOT NULL,
    model            text NOT NULL,                 -- resolved model (after auto-routing)
    lane             text NOT NULL,
    status           text NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'completing', 'succeeded', 'failed',
                                       'expired', 'blocked', 'rejected', 'cancelled')),
    priority         int NOT NULL DEFAULT 0,
    deadline         timestamptz,
    reply_topic      text,
    task_count       int NOT NULL,                  -- inference tasks (gather excluded)
    batch            boolean NOT NULL DEFAULT false,
    request          jsonb NOT NULL,                -- holds prompts: never exposed to finance
    result           jsonb,
    source_topic     text,
    source_partition int,
    source_offset    bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz
);
CREATE INDEX jobs_tenant_created ON jobs (tenant_id, created_at);

-- One row per node of a job's graph: inference tasks run on workers, the
-- gather node runs in the dispatcher once its dependencies are done.
CREATE TABLE tasks (
    task_id       text PRIMARY KEY,                 -- "<request_id>/<idx>"
    request_id    text NOT NULL REFERENCES jobs (request_id),
    idx           int NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('inference', 'gather')),
    depends_on    int[] NOT NULL DEFAULT '{}',
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'queued', 'succeeded', 'failed', 'expired')),
    model         text,
    provider      text,
    pool          text,
    lane          text,
    attempts      int NOT NULL DEFAULT 0,
    output        jsonb,
    result        jsonb,                            -- the full task result message
    error_code    text,
    error_message text,
    worker_id     text,
    queued_at     timestamptz,
    completed_at  timestamptz,
    UNIQUE (request_id, idx)
);
CREATE INDEX tasks_open ON tasks (request_id) WHERE status IN ('pending', 'queued');

-- Append-only billable usage, one row per usage event (unique event_id).
CREATE TABLE usage (
    event_id           text PRIMARY KEY,
    request_id         text NOT NULL,
    task_id            text NOT NULL,
    tenant_id          text NOT NULL,
    model              text NOT NULL,
    provider           text NOT NULL,
    pool               text,
    allocation_id      text,
    allocation_seconds numeric(14, 3) NOT NULL DEFAULT 0,
    tflops             numeric(12, 3),
    vram_mb            bigint,
    prompt_tokens      bigint NOT NULL DEFAULT 0,
    completion_tokens  bigint NOT NULL DEFAULT 0,
    request_bytes      bigint NOT NULL DEFAULT 0,
    response_bytes     bigint NOT NULL DEFAULT 0,
    attempts           int NOT NULL DEFAULT 1,
    allocate_ms        bigint,
    inference_ms       bigint,
    release_ms         bigint,
    total_ms           bigint,
    occurred_at        timestamptz NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_tenant_time ON usage (tenant_id, occurred_at);
