-- 025_rate_limits.sql: per-tenant (and tenant+model) rate limits shared by every
-- dispatcher (dispatcher/ratelimit.c, docs/scheduling.md#rate-limits).
-- rate_buckets: one token bucket per key ("tenant" or "tenant/model"), with a
-- level for requests and one for tokens; NULL is a full bucket. The rates come
-- from configuration with every call, so a reload applies at once.
CREATE TABLE rate_buckets (
    key        text PRIMARY KEY,
    req_level  double precision,
    tok_level  double precision,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- rate_holds: a request over its limit that waits (rate_limits.on_limit
-- "wait"), with its original bytes. released_at is set when the bucket let it
-- go and its bytes were handed back to the requests topic; the row is deleted
-- when the request comes back through admission (or its job exists).
CREATE TABLE rate_holds (
    request_id  text PRIMARY KEY,
    key         text NOT NULL,
    tenant_id   text NOT NULL,
    rpm         double precision NOT NULL,
    rburst      double precision NOT NULL,
    rcost       double precision NOT NULL,
    tpm         double precision NOT NULL,
    tburst      double precision NOT NULL,
    tcost       double precision NOT NULL,
    body        text NOT NULL,
    traceparent text,
    held_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    released_at timestamptz,
    released_by text
);
CREATE INDEX rate_holds_waiting ON rate_holds (key, held_at) WHERE released_at IS NULL;
CREATE INDEX rate_holds_released ON rate_holds (released_at) WHERE released_at IS NOT NULL;

-- The level of bucket b after refilling for the time since it was last
-- updated, capped at the burst. rate: per minute; 0 means no limit.
CREATE FUNCTION gantry_rate_level(level double precision, burst double precision,
                                  rate double precision, since timestamptz,
                                  at timestamptz) RETURNS double precision
    LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN rate <= 0 THEN burst
                ELSE least(burst, coalesce(level, burst)
                           + greatest(0, extract(epoch FROM at - since)) * rate / 60.0) END
$$;

-- Admission of one batch of requests (one call per dispatcher loop turn).
-- items: [{i, key, rid, rpm, rburst, rcost, tpm, tburst, tcost}]. Returns per
-- item 'admitted' (charged), 'known' (its job exists or its hold was released:
-- admitted, not charged again; a released hold is deleted) or 'over' (with
-- the milliseconds until the bucket could take it). Items of one key are taken
-- in order; once one is over, or while the key has waiting holds, the rest are
-- over too (first come, first served). A cost above the burst is admitted
-- when the bucket is full and leaves it in debt. Buckets are locked in key
-- order, so concurrent dispatchers serialise on a key without deadlocks.
CREATE FUNCTION gantry_rate_take(items jsonb)
    RETURNS TABLE (idx int, verdict text, retry_ms bigint)
    LANGUAGE plpgsql AS $$
DECLARE
    k record;
    it record;
    b record;
    rl double precision;
    tl double precision;
    ts timestamptz;
    blocked boolean;
    first boolean;
BEGIN
    FOR k IN SELECT DISTINCT x.key FROM jsonb_to_recordset(items) AS x(key text) ORDER BY 1 LOOP
        INSERT INTO rate_buckets (key) VALUES (k.key) ON CONFLICT (key) DO NOTHING;
        SELECT * INTO b FROM rate_buckets WHERE rate_buckets.key = k.key FOR UPDATE;
        ts := greatest(clock_timestamp(), b.updated_at);
        blocked := EXISTS (SELECT 1 FROM rate_holds h
                           WHERE h.key = k.key AND h.released_at IS NULL);
        first := true;
        FOR it IN SELECT * FROM jsonb_to_recordset(items) AS x(i int, key text, rid text,
                      rpm double precision, rburst double precision, rcost double precision,
                      tpm double precision, tburst double precision, tcost double precision)
                  WHERE x.key = k.key ORDER BY x.i LOOP
            IF first THEN
                rl := gantry_rate_level(b.req_level, it.rburst, it.rpm, b.updated_at, ts);
                tl := gantry_rate_level(b.tok_level, it.tburst, it.tpm, b.updated_at, ts);
                first := false;
            END IF;
            idx := it.i;
            retry_ms := 0;
            DELETE FROM rate_holds h WHERE h.request_id = it.rid AND h.released_at IS NOT NULL;
            IF FOUND OR EXISTS (SELECT 1 FROM jobs j WHERE j.request_id = it.rid) THEN
                verdict := 'known';
            ELSIF NOT blocked AND (it.rpm <= 0 OR rl >= least(it.rcost, it.rburst))
                  AND (it.tpm <= 0 OR tl >= least(it.tcost, it.tburst)) THEN
                verdict := 'admitted';
                IF it.rpm > 0 THEN rl := rl - it.rcost; END IF;
                IF it.tpm > 0 THEN tl := tl - it.tcost; END IF;
            ELSE
                verdict := 'over';
                blocked := true;
                retry_ms := ceil(greatest(
                    CASE WHEN it.rpm > 0 THEN (least(it.rcost, it.rburst) - rl) * 60000 / it.rpm
                         ELSE 0 END,
                    CASE WHEN it.tpm > 0 THEN (least(it.tcost, it.tburst) - tl) * 60000 / it.tpm
                         ELSE 0 END, 1))::bigint;
            END IF;
            RETURN NEXT;
        END LOOP;
        UPDATE rate_buckets SET req_level = rl, tok_level = tl, updated_at = ts
         WHERE rate_buckets.key = k.key;
    END LOOP;
END
$$;

-- Releases waiting holds in held_at order per key while the bucket can take
-- them (charging it), at most lim per key, marking them released by holder.
-- Holds released more than stale_ms ago whose request never came back are
-- released again (their produce was lost with a dispatcher), not charged
-- again; those whose job exists are deleted. A bucket another dispatcher is
-- releasing now is skipped (SKIP LOCKED): each hold is released once.
CREATE FUNCTION gantry_rate_release(holder text, lim int, stale_ms bigint)
    RETURNS TABLE (request_id text, body text, traceparent text)
    LANGUAGE plpgsql AS $$
DECLARE
    k record;
    h record;
    b record;
    rl double precision;
    tl double precision;
    ts timestamptz;
    first boolean;
BEGIN
    FOR k IN SELECT DISTINCT w.key FROM rate_holds w WHERE w.released_at IS NULL ORDER BY 1 LOOP
        SELECT * INTO b FROM rate_buckets WHERE rate_buckets.key = k.key FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        ts := greatest(clock_timestamp(), b.updated_at);
        first := true;
        FOR h IN SELECT * FROM rate_holds w WHERE w.key = k.key AND w.released_at IS NULL
                 ORDER BY w.held_at, w.request_id LIMIT lim FOR UPDATE SKIP LOCKED LOOP
            IF first THEN
                rl := gantry_rate_level(b.req_level, h.rburst, h.rpm, b.updated_at, ts);
                tl := gantry_rate_level(b.tok_level, h.tburst, h.tpm, b.updated_at, ts);
                first := false;
            END IF;
            EXIT WHEN NOT ((h.rpm <= 0 OR rl >= least(h.rcost, h.rburst))
                           AND (h.tpm <= 0 OR tl >= least(h.tcost, h.tburst)));
            IF h.rpm > 0 THEN rl := rl - h.rcost; END IF;
            IF h.tpm > 0 THEN tl := tl - h.tcost; END IF;
            UPDATE rate_holds w SET released_at = ts, released_by = holder
             WHERE w.request_id = h.request_id;
            request_id := h.request_id;
            body := h.body;
            traceparent := h.traceparent;
            RETURN NEXT;
        END LOOP;
        IF NOT first THEN
            UPDATE rate_buckets SET req_level = rl, tok_level = tl, updated_at = ts
             WHERE rate_buckets.key = k.key;
        END IF;
    END LOOP;
    DELETE FROM rate_holds w
     WHERE w.released_at < clock_timestamp() - stale_ms * interval '1 millisecond'
       AND EXISTS (SELECT 1 FROM jobs j WHERE j.request_id = w.request_id);
    RETURN QUERY
        UPDATE rate_holds w SET released_at = clock_timestamp(), released_by = holder
         WHERE w.request_id IN (SELECT s.request_id FROM rate_holds s
                                 WHERE s.released_at < clock_timestamp()
                                       - stale_ms * interval '1 millisecond'
                                 ORDER BY s.released_at LIMIT lim FOR UPDATE SKIP LOCKED)
        RETURNING w.request_id, w.body, w.traceparent;
END
$$;
