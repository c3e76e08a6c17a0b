-- 021_release.sql: priorities and tenant fairness (docs/scheduling.md). In a
-- lane with configured slots, inference tasks are stored 'pending' with hold
-- 'waiting' and are published by the dispatcher's releaser (dispatcher/release.c)
-- when gantry_release picks them: by priority band (weighted, so low priority
-- is never starved) and, within a band, by the tenants' weighted shares of the
-- lane's slots. hold 'releasing': picked and being published (counted in
-- flight); cleared once Kafka acknowledged it. started_msg: the Kafka message
-- (partition:offset) whose copy passed the start gate, so that a second copy
-- of a task (a release re-published after a crash) is skipped, never run twice.
ALTER TABLE tasks ADD COLUMN tenant_id text,
    ADD COLUMN priority int NOT NULL DEFAULT 0,
    ADD COLUMN hold text CHECK (hold IN ('waiting', 'releasing')),
    ADD COLUMN hold_by text,
    ADD COLUMN hold_at timestamptz,
    ADD COLUMN waiting_since timestamptz,
    ADD COLUMN message jsonb,
    ADD COLUMN started_msg text;
CREATE INDEX tasks_waiting ON tasks (lane, priority, tenant_id, waiting_since, request_id, idx)
    WHERE hold = 'waiting' AND status = 'pending';
CREATE INDEX tasks_releasing ON tasks (lane, tenant_id) WHERE hold = 'releasing';
CREATE INDEX tasks_lane_in_flight ON tasks (lane, tenant_id) WHERE status IN ('queued', 'running');

-- One row per lane: its lock orders the releasers of every dispatcher; vtime
-- is the stride scheduler's virtual time. One row per (lane, band): its pass,
-- kept while the band has tasks waiting; a band that starts waiting again
-- starts at vtime (no credit for the time it had nothing to run).
CREATE TABLE release_lanes (
    lane  text PRIMARY KEY,
    vtime double precision NOT NULL DEFAULT 0
);
CREATE TABLE release_bands (
    lane     text NOT NULL,
    priority int NOT NULL,
    pass     double precision NOT NULL DEFAULT 0,
    active   boolean NOT NULL DEFAULT false, -- had waiting tasks at the last release
    PRIMARY KEY (lane, priority)
);

-- Picks the tasks of lane p_lane to publish now and marks them 'releasing' by
-- p_by ("<id>/<incarnation>"), under the lane's row lock (each statement below
-- sees what the previous holder committed). Returns, first, tasks whose
-- release was never confirmed: claimed longer than p_stale_ms ago, or by a
-- dead incarnation of p_id (o_again true); then new ones, as many as the lane has free slots
-- (p_slots minus tasks queued, running or releasing). Order: the priority
-- bands by stride scheduling (band p weighs 2^p: with both waiting, band p+1
-- gets two releases for one of band p); within a band, tenants below their
-- share (p_slots * weight / sum of the weights of the tenants with work in
-- the lane; p_weights {tenant: weight}, default 1) first, then the lowest
-- in-flight count per weight, then the oldest. A tenant alone fills every
-- free slot.
CREATE FUNCTION gantry_release(p_lane text, p_slots int, p_weights jsonb, p_by text, p_id text,
                               p_stale_ms bigint)
RETURNS TABLE (o_task_id text, o_request_id text, o_message jsonb, o_traceparent text,
              o_again boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_used int;
    v_free int;
    v_vtime double precision;
BEGIN
    INSERT INTO release_lanes (lane) VALUES (p_lane) ON CONFLICT (lane) DO NOTHING;
    SELECT vtime INTO v_vtime FROM release_lanes WHERE lane = p_lane FOR UPDATE;
    -- Released rows that started or ended (the gate came before the mark).
    UPDATE tasks SET hold = NULL WHERE lane = p_lane AND hold = 'releasing' AND status <> 'pending';
    RETURN QUERY
    WITH s AS (
        UPDATE tasks t SET hold_by = p_by, hold_at = now()
        WHERE t.lane = p_lane AND t.hold = 'releasing' AND t.status = 'pending'
          AND (t.hold_at < now() - p_stale_ms * interval '1 millisecond'
               OR (left(t.hold_by, length(p_id) + 1) = p_id || '/' AND t.hold_by <> p_by))
        RETURNING t.task_id, t.request_id, t.message)
    SELECT s.task_id, s.request_id, s.message, j.traceparent, true
    FROM s JOIN jobs j ON j.request_id = s.request_id;

    SELECT count(*) INTO v_used FROM tasks t
    WHERE t.lane = p_lane AND (t.status IN ('queued', 'running')
                               OR (t.status = 'pending' AND t.hold = 'releasing'));
    v_free := p_slots - v_used;
    IF v_free <= 0 THEN
        RETURN;
    END IF;

    RETURN QUERY
    WITH RECURSIVE f AS (
        SELECT t.tenant_id, count(*) AS n FROM tasks t
        WHERE t.lane = p_lane AND (t.status IN ('queued', 'running')
                                   OR (t.status = 'pending' AND t.hold = 'releasing'))
        GROUP BY t.tenant_id),
    -- The (band, tenant) pairs with tasks waiting: a skip scan of tasks_waiting.
    g AS (
        (SELECT t.priority, t.tenant_id FROM tasks t
         WHERE t.lane = p_lane AND t.hold = 'waiting' AND t.status = 'pending'
         ORDER BY t.priority, t.tenant_id LIMIT 1)
        UNION ALL
        SELECT n.priority, n.tenant_id FROM g, LATERAL (
            SELECT t.priority, t.tenant_id FROM tasks t
            WHERE t.lane = p_lane AND t.hold = 'waiting' AND t.status = 'pending'
              AND (t.priority, t.tenant_id) > (g.priority, g.tenant_id)
            ORDER BY t.priority, t.tenant_id LIMIT 1) n),
    w AS (
        SELECT x.* FROM g, LATERAL (
            SELECT t.task_id, t.request_id, t.idx, t.tenant_id, t.priority, t.waiting_since FROM tasks t
            WHERE t.lane = p_lane AND t.hold = 'waiting' AND t.status = 'pending'
              AND t.priority = g.priority AND t.tenant_id = g.tenant_id
            ORDER BY t.waiting_since, t.request_id, t.idx LIMIT v_free) x),
    act AS (SELECT g.tenant_id FROM g UNION SELECT f.tenant_id FROM f),
    wt AS (
        SELECT a.tenant_id,
               greatest(coalesce((p_weights ->> a.tenant_id)::double precision, 1), 0.001) AS weight
        FROM act a),
    tot AS (SELECT sum(wt.weight) AS s FROM wt),
    r1 AS (
        SELECT w.task_id, w.priority, w.waiting_since, wt.weight, p_slots * wt.weight / tot.s AS share,
               coalesce(f.n, 0) + row_number() OVER (PARTITION BY w.priority, w.tenant_id
                                                     ORDER BY w.waiting_since, w.request_id, w.idx) - 1 AS pos
        FROM w JOIN wt ON wt.tenant_id IS NOT DISTINCT FROM w.tenant_id CROSS JOIN tot
        LEFT JOIN f ON f.tenant_id IS NOT DISTINCT FROM w.tenant_id),
    r2 AS (
        SELECT r1.task_id, r1.priority,
               row_number() OVER (PARTITION BY r1.priority
                                  ORDER BY (r1.pos < r1.share) DESC, r1.pos / r1.weight,
                                           r1.waiting_since, r1.task_id) AS j
        FROM r1),
    b AS (
        SELECT DISTINCT r2.priority,
               CASE WHEN rb.active THEN rb.pass ELSE greatest(coalesce(rb.pass, 0), v_vtime)
               END AS start
        FROM r2 LEFT JOIN release_bands rb ON rb.lane = p_lane AND rb.priority = r2.priority),
    pick AS (
        SELECT r2.task_id, r2.priority,
               b.start + r2.j / power(2, least(greatest(r2.priority, 0), 9)) AS k
        FROM r2 JOIN b ON b.priority = r2.priority
        ORDER BY 3, r2.priority DESC, r2.j LIMIT v_free),
    pb AS (
        INSERT INTO release_bands AS rb (lane, priority, pass, active)
        SELECT p_lane, b.priority,
               coalesce((SELECT max(pick.k) FROM pick WHERE pick.priority = b.priority), b.start),
               true
        FROM b
        ON CONFLICT (lane, priority) DO UPDATE SET pass = EXCLUDED.pass, active = true),
    pi AS (
        UPDATE release_bands rb SET active = false
        WHERE rb.lane = p_lane AND rb.active AND rb.priority NOT IN (SELECT b.priority FROM b)),
    pl AS (
        UPDATE release_lanes l SET vtime = greatest(l.vtime, (SELECT max(pick.k) FROM pick))
        WHERE l.lane = p_lane AND EXISTS (SELECT 1 FROM pick)),
    u AS (
        UPDATE tasks t SET hold = 'releasing', hold_by = p_by, hold_at = now()
        FROM pick
        WHERE t.task_id = pick.task_id AND t.hold = 'waiting' AND t.status = 'pending'
        RETURNING t.task_id, t.request_id, t.message)
    SELECT u.task_id, u.request_id, u.message, j.traceparent, false
    FROM u JOIN jobs j ON j.request_id = u.request_id;
END $$;
