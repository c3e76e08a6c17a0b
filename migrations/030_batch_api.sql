-- 030_batch_api.sql: gantry-api's state (docs/batch-api.md): per-tenant API
-- keys (SHA-256 of the secret only), uploaded and generated files stored in
-- chunks, batches, and one row per batch line that holds its Gantry request
-- until published and its vendor-format result line once it has one.
CREATE TABLE api_keys (
    key_id      text PRIMARY KEY,
    tenant_id   text NOT NULL,
    key_sha256  text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE api_files (
    file_id     text PRIMARY KEY,
    tenant_id   text NOT NULL,
    filename    text NOT NULL,
    purpose     text NOT NULL,
    bytes       bigint NOT NULL DEFAULT 0,
    lines       integer NOT NULL DEFAULT 0,
    complete    boolean NOT NULL DEFAULT false, -- an upload cut short stays invisible
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX api_files_tenant ON api_files (tenant_id, created_at);

CREATE TABLE api_file_chunks (
    file_id  text NOT NULL REFERENCES api_files (file_id) ON DELETE CASCADE
                      DEFERRABLE INITIALLY DEFERRED, -- an upload's chunks come before its row
    seq      integer NOT NULL,
    data     bytea NOT NULL,
    PRIMARY KEY (file_id, seq)
);

CREATE TABLE api_batches (
    batch_id          text PRIMARY KEY,
    tenant_id         text NOT NULL,
    flavor            text NOT NULL CHECK (flavor IN ('openai', 'anthropic')),
    endpoint          text NOT NULL,
    input_file_id     text,
    completion_window text NOT NULL DEFAULT '24h',
    metadata          jsonb,
    status            text NOT NULL,
    ending            text CHECK (ending IN ('cancel', 'expire')), -- what is being done to the rest
    errors            jsonb,
    output_file_id    text,
    error_file_id     text,
    total             integer NOT NULL DEFAULT 0,
    event_sent        boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    in_progress_at    timestamptz,
    expires_at        timestamptz NOT NULL,
    finalizing_at     timestamptz,
    completed_at      timestamptz,
    failed_at         timestamptz,
    expired_at        timestamptz,
    cancelling_at     timestamptz,
    cancelled_at      timestamptz
);
CREATE INDEX api_batches_tenant ON api_batches (tenant_id, flavor, batch_id);
CREATE INDEX api_batches_open ON api_batches (status) WHERE status IN ('in_progress', 'cancelling', 'finalizing');

-- state: pending (no result yet), succeeded, errored (invalid line or failed
-- request), cancelled, expired. published: the request reached gantry.requests.
-- cancel_sent: the control topic has its cancel.
CREATE TABLE api_batch_lines (
    batch_id     text NOT NULL REFERENCES api_batches (batch_id) ON DELETE CASCADE,
    line         integer NOT NULL,
    custom_id    text NOT NULL,
    request_id   text,
    request      jsonb,
    state        text NOT NULL DEFAULT 'pending',
    published    boolean NOT NULL DEFAULT false,
    cancel_sent  boolean NOT NULL DEFAULT false,
    result       jsonb,          -- the Gantry result, or {code, message} of an invalid line
    PRIMARY KEY (batch_id, line)
);
CREATE UNIQUE INDEX api_batch_lines_custom ON api_batch_lines (batch_id, custom_id) WHERE custom_id <> '';
CREATE UNIQUE INDEX api_batch_lines_request ON api_batch_lines (request_id);
CREATE INDEX api_batch_lines_unpublished ON api_batch_lines (batch_id, line) WHERE NOT published AND state = 'pending';

-- The vendor-format line of one batch line (docs/batch-api.md): OpenAI output
-- or error line, from the Gantry result stored in result (or the validation
-- error for a line never sent).
CREATE FUNCTION gantry_api_openai_line(p_endpoint text, l api_batch_lines) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
    WHEN l.state = 'errored' AND l.request_id IS NULL THEN
        jsonb_build_object('id', 'batch_req_' || left(md5(l.batch_id || '#' || l.line), 24),
            'custom_id', nullif(l.custom_id, ''), 'response', NULL,
            'error', jsonb_build_object('code', coalesce(l.result->>'code', 'invalid_request'),
                                        'message', l.result->>'message', 'line', l.line))
    WHEN l.state = 'succeeded' THEN
        jsonb_build_object('id', 'batch_req_' || left(md5(l.request_id), 24),
            'custom_id', l.custom_id, 'error', NULL,
            'response', jsonb_build_object('status_code', 200, 'request_id', l.request_id,
                'body', CASE p_endpoint
                WHEN '/v1/embeddings' THEN jsonb_build_object('object', 'list',
                    'data', CASE WHEN jsonb_typeof(l.result->'outputs') = 'array' THEN
                        (SELECT coalesce(jsonb_agg(jsonb_build_object('object', 'embedding',
                            'index', (o->>'index')::int, 'embedding', o->'output'->'embedding')
                            ORDER BY (o->>'index')::int), '[]'::jsonb)
                         FROM jsonb_array_elements(l.result->'outputs') o)
                        ELSE jsonb_build_array(jsonb_build_object('object', 'embedding', 'index', 0,
                            'embedding', l.result->'output'->'embedding')) END,
                    'model', l.result->>'model',
                    'usage', jsonb_build_object(
                        'prompt_tokens', coalesce((l.result->'usage'->>'prompt_tokens')::bigint, 0),
                        'total_tokens', coalesce((l.result->'usage'->>'prompt_tokens')::bigint, 0)))
                WHEN '/v1/completions' THEN jsonb_build_object(
                    'id', 'cmpl-' || left(md5(l.request_id), 24), 'object', 'text_completion',
                    'created', extract(epoch FROM now())::bigint, 'model', l.result->>'model',
                    'choices', jsonb_build_array(jsonb_build_object('text', l.result->'output'->>'text',
                        'index', 0, 'logprobs', NULL, 'finish_reason', 'stop')),
                    'usage', jsonb_build_object(
                        'prompt_tokens', coalesce((l.result->'usage'->>'prompt_tokens')::bigint, 0),
                        'completion_tokens', coalesce((l.result->'usage'->>'completion_tokens')::bigint, 0),
                        'total_tokens', coalesce((l.result->'usage'->>'prompt_tokens')::bigint, 0)
                                      + coalesce((l.result->'usage'->>'completion_tokens')::bigint, 0)))
                ELSE jsonb_build_object(
                    'id', 'chatcmpl-' || left(md5(l.request_id), 24), 'object', 'chat.completion',
                    'created', extract(epoch FROM now())::bigint, 'model', l.result->>'model',
                    'choices', jsonb_build_array(jsonb_build_object('index', 0,
                        'message', jsonb_build_object('role', 'assistant',
                                                      'content', l.result->'output'->>'text'),
                        'logprobs', NULL, 'finish_reason', 'stop')),
                    'usage', jsonb_build_object(
                        'prompt_tokens', coalesce((l.result->'usage'->>'prompt_tokens')::bigint, 0),
                        'completion_tokens', coalesce((l.result->'usage'->>'completion_tokens')::bigint, 0),
                        'total_tokens', coalesce((l.result->'usage'->>'prompt_tokens')::bigint, 0)
                                      + coalesce((l.result->'usage'->>'completion_tokens')::bigint, 0)))
                END))
    ELSE
        jsonb_build_object('id', 'batch_req_' || left(md5(coalesce(l.request_id, l.batch_id || '#' || l.line)), 24),
            'custom_id', l.custom_id, 'error', NULL,
            'response', jsonb_build_object(
                'status_code', CASE WHEN l.state IN ('cancelled', 'expired') THEN 499
                                    WHEN l.result->>'status' IN ('rejected', 'blocked') THEN 400
                                    ELSE 500 END,
                'request_id', l.request_id,
                'body', jsonb_build_object('error', jsonb_build_object(
                    'message', coalesce(l.result->'error'->>'message', l.state),
                    'type', CASE l.state WHEN 'cancelled' THEN 'batch_cancelled'
                                         WHEN 'expired' THEN 'batch_expired'
                                         ELSE coalesce(l.result->>'status', 'failed') END,
                    'param', NULL,
                    'code', coalesce(l.result->'error'->>'code', l.state)))))
    END
$$;

-- The Anthropic results line of one batch line.
CREATE FUNCTION gantry_api_anthropic_line(l api_batch_lines) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('custom_id', l.custom_id, 'result', CASE l.state
        WHEN 'succeeded' THEN jsonb_build_object('type', 'succeeded', 'message', jsonb_build_object(
            'id', 'msg_' || left(md5(l.request_id), 24), 'type', 'message', 'role', 'assistant',
            'model', l.result->>'model',
            'content', jsonb_build_array(jsonb_build_object('type', 'text', 'text', l.result->'output'->>'text')),
            'stop_reason', 'end_turn', 'stop_sequence', NULL,
            'usage', jsonb_build_object(
                'input_tokens', coalesce((l.result->'usage'->>'prompt_tokens')::bigint, 0),
                'output_tokens', coalesce((l.result->'usage'->>'completion_tokens')::bigint, 0))))
        WHEN 'cancelled' THEN jsonb_build_object('type', 'canceled')
        WHEN 'expired' THEN jsonb_build_object('type', 'expired')
        ELSE jsonb_build_object('type', 'errored', 'error', jsonb_build_object('type', 'error',
            'error', jsonb_build_object(
                'type', CASE WHEN l.request_id IS NULL OR l.result->>'status' IN ('rejected', 'blocked')
                             THEN 'invalid_request_error' ELSE 'api_error' END,
                'message', coalesce(l.result->'error'->>'message', l.result->>'message', 'failed'))))
        END)
$$;

-- Records one result of a batch line, once (a redelivered result changes
-- nothing). Returns the batch id when no line of the batch is pending any
-- more (the caller then finalizes it), else NULL. The batch row is locked
-- first, so two results racing for the last lines cannot both miss it.
CREATE FUNCTION gantry_api_record(p_request_id text, p_state text, p_result jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_batch text;
BEGIN
    SELECT batch_id INTO v_batch FROM api_batch_lines WHERE request_id = p_request_id;
    IF v_batch IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM api_batches WHERE batch_id = v_batch FOR UPDATE;
    UPDATE api_batch_lines SET state = CASE
            WHEN p_state = 'cancelled' AND b.ending = 'expire' THEN 'expired' ELSE p_state END,
        result = p_result
      FROM api_batches b
     WHERE request_id = p_request_id AND state = 'pending' AND b.batch_id = v_batch;
    IF EXISTS (SELECT 1 FROM api_batch_lines WHERE batch_id = v_batch AND state = 'pending') THEN
        RETURN NULL;
    END IF;
    RETURN v_batch;
END $$;

-- Ends a batch whose lines all have a result, in one transaction: finalizing,
-- then (OpenAI) the output and error files written in 1,000-line chunks, then
-- completed / cancelled / expired. Safe to run twice and on a batch that is
-- not ready (it does nothing). Returns the batch's final status, or NULL.
CREATE FUNCTION gantry_api_finalize(p_batch text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    b api_batches;
    v_final text;
    v_out text;
    v_err text;
BEGIN
    SELECT * INTO b FROM api_batches WHERE batch_id = p_batch FOR UPDATE;
    IF b.batch_id IS NULL OR b.status NOT IN ('in_progress', 'cancelling', 'finalizing') THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM api_batch_lines WHERE batch_id = p_batch AND state = 'pending') THEN
        RETURN NULL;
    END IF;
    v_final := CASE b.ending WHEN 'cancel' THEN 'cancelled' WHEN 'expire' THEN 'expired'
                             ELSE 'completed' END;
    UPDATE api_batches SET finalizing_at = coalesce(finalizing_at, now()) WHERE batch_id = p_batch
       AND v_final = 'completed';
    IF b.flavor = 'openai' THEN
        IF EXISTS (SELECT 1 FROM api_batch_lines WHERE batch_id = p_batch AND state = 'succeeded') THEN
            v_out := 'file-' || left(md5(p_batch || ':output'), 24);
            INSERT INTO api_files (file_id, tenant_id, filename, purpose, complete)
            VALUES (v_out, b.tenant_id, p_batch || '_output.jsonl', 'batch_output', true)
            ON CONFLICT DO NOTHING;
            DELETE FROM api_file_chunks WHERE file_id = v_out;
            INSERT INTO api_file_chunks (file_id, seq, data)
            SELECT v_out, n / 1000, convert_to(string_agg(t || E'\n', '' ORDER BY line), 'UTF8')
              FROM (SELECT l.line, gantry_api_openai_line(b.endpoint, l)::text AS t,
                           (row_number() OVER (ORDER BY l.line) - 1)::int AS n
                      FROM api_batch_lines l WHERE l.batch_id = p_batch AND l.state = 'succeeded') s
             GROUP BY n / 1000;
        END IF;
        IF EXISTS (SELECT 1 FROM api_batch_lines WHERE batch_id = p_batch AND state <> 'succeeded') THEN
            v_err := 'file-' || left(md5(p_batch || ':error'), 24);
            INSERT INTO api_files (file_id, tenant_id, filename, purpose, complete)
            VALUES (v_err, b.tenant_id, p_batch || '_error.jsonl', 'batch_output', true)
            ON CONFLICT DO NOTHING;
            DELETE FROM api_file_chunks WHERE file_id = v_err;
            INSERT INTO api_file_chunks (file_id, seq, data)
            SELECT v_err, n / 1000, convert_to(string_agg(t || E'\n', '' ORDER BY line), 'UTF8')
              FROM (SELECT l.line, gantry_api_openai_line(b.endpoint, l)::text AS t,
                           (row_number() OVER (ORDER BY l.line) - 1)::int AS n
                      FROM api_batch_lines l WHERE l.batch_id = p_batch AND l.state <> 'succeeded') s
             GROUP BY n / 1000;
        END IF;
        UPDATE api_files f SET bytes = (SELECT coalesce(sum(length(data)), 0) FROM api_file_chunks c
                                         WHERE c.file_id = f.file_id),
                               lines = (SELECT count(*) FROM api_batch_lines l WHERE l.batch_id = p_batch
                                         AND (l.state = 'succeeded') = (f.file_id = v_out))
         WHERE f.file_id IN (v_out, v_err);
    END IF;
    UPDATE api_batches SET status = v_final, output_file_id = v_out, error_file_id = v_err,
           completed_at = CASE WHEN v_final = 'completed' THEN now() END,
           cancelled_at = CASE WHEN v_final = 'cancelled' THEN now() END,
           expired_at = CASE WHEN v_final = 'expired' THEN now() END
     WHERE batch_id = p_batch;
    RETURN v_final;
END $$;

-- Unix seconds of a timestamp, NULL kept.
CREATE FUNCTION gantry_api_epoch(t timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT extract(epoch FROM t)::bigint $$;

-- The OpenAI batch object. request_counts come from the lines, the same rows
-- the output and error files are written from.
CREATE FUNCTION gantry_api_openai_batch(b api_batches) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', b.batch_id, 'object', 'batch', 'endpoint', b.endpoint,
        'errors', b.errors, 'input_file_id', b.input_file_id,
        'completion_window', b.completion_window, 'status', b.status,
        'output_file_id', b.output_file_id, 'error_file_id', b.error_file_id,
        'created_at', gantry_api_epoch(b.created_at),
        'in_progress_at', gantry_api_epoch(b.in_progress_at),
        'expires_at', gantry_api_epoch(b.expires_at),
        'finalizing_at', gantry_api_epoch(b.finalizing_at),
        'completed_at', gantry_api_epoch(b.completed_at),
        'failed_at', gantry_api_epoch(b.failed_at),
        'expired_at', gantry_api_epoch(b.expired_at),
        'cancelling_at', gantry_api_epoch(b.cancelling_at),
        'cancelled_at', gantry_api_epoch(b.cancelled_at),
        'request_counts', (SELECT jsonb_build_object('total', b.total,
                'completed', count(*) FILTER (WHERE state = 'succeeded'),
                'failed', count(*) FILTER (WHERE state NOT IN ('pending', 'succeeded')))
            FROM api_batch_lines WHERE batch_id = b.batch_id),
        'metadata', b.metadata)
$$;

-- The Anthropic message batch object; p_base is the URL the client reached
-- (results_url is absolute, as the SDKs fetch it as given).
CREATE FUNCTION gantry_api_anthropic_batch(b api_batches, p_base text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', b.batch_id, 'type', 'message_batch',
        'processing_status', CASE WHEN b.status IN ('completed', 'cancelled', 'expired', 'failed')
                                  THEN 'ended' WHEN b.status = 'cancelling' THEN 'canceling'
                                  ELSE 'in_progress' END,
        'request_counts', (SELECT jsonb_build_object(
                'processing', count(*) FILTER (WHERE state = 'pending'),
                'succeeded', count(*) FILTER (WHERE state = 'succeeded'),
                'errored', count(*) FILTER (WHERE state = 'errored'),
                'canceled', count(*) FILTER (WHERE state = 'cancelled'),
                'expired', count(*) FILTER (WHERE state = 'expired'))
            FROM api_batch_lines WHERE batch_id = b.batch_id),
        'ended_at', to_char(coalesce(b.completed_at, b.cancelled_at, b.expired_at, b.failed_at)
                            AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'created_at', to_char(b.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'expires_at', to_char(b.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'archived_at', NULL,
        'cancel_initiated_at', to_char(b.cancelling_at AT TIME ZONE 'UTC',
                                       'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'results_url', CASE WHEN b.status IN ('completed', 'cancelled', 'expired', 'failed')
                            THEN p_base || '/v1/messages/batches/' || b.batch_id || '/results' END)
$$;
