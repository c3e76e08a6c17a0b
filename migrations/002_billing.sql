-- 002_billing.sql: price book, costed usage partitioned by month, budgets,
-- invoices (immutable once issued) and the finance role. See docs/billing.md.
--
-- Money is bigint micro-units of the price's currency. Rounding happens once,
-- per usage row and component (prompt, completion, allocation, request), half
-- up (all amounts are non-negative, so PostgreSQL's round() is half-up); every
-- sum above that (invoice lines, totals, budgets) is exact integer addition.
-- Billing periods are calendar months in UTC.

CREATE FUNCTION billing_period(ts timestamptz) RETURNS date
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT date_trunc('month', ts AT TIME ZONE 'UTC')::date $$;

CREATE FUNCTION billing_period_start(period date) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT date_trunc('month', period)::timestamp AT TIME ZONE 'UTC' $$;

-- qty * rate / per micro-units, rounded half up to a whole micro-unit.
CREATE FUNCTION billing_micros(qty numeric, rate bigint, per integer) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT round(coalesce(qty, 0) * coalesce(rate, 0) / per)::bigint $$;

-- ---------------------------------------------------------------- price book
-- Versioned: a price is never edited; a new row with a later effective_from
-- supersedes it. tenant_id NULL is the list price; a tenant's own row, when
-- one is in force, wins over the list price.
CREATE TABLE prices (
    price_id                 bigserial PRIMARY KEY,
    provider                 text NOT NULL,
    model                    text NOT NULL,
    tenant_id                text,
    currency                 text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    effective_from           timestamptz NOT NULL,
    prompt_per_1k_micros     bigint NOT NULL DEFAULT 0 CHECK (prompt_per_1k_micros >= 0),
    completion_per_1k_micros bigint NOT NULL DEFAULT 0 CHECK (completion_per_1k_micros >= 0),
    request_micros           bigint NOT NULL DEFAULT 0 CHECK (request_micros >= 0),
    allocation_second_micros bigint NOT NULL DEFAULT 0 CHECK (allocation_second_micros >= 0),
    source                   text,                 -- file it was loaded from
    loaded_at                timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX prices_version ON prices (provider, model, coalesce(tenant_id, ''), effective_from);

-- Allocation-second price by GPU class: the class with the largest
-- (min_tflops, min_vram_mb) that the allocation reaches; none: the price's own.
CREATE TABLE price_gpu_classes (
    price_id                 bigint NOT NULL REFERENCES prices (price_id),
    min_tflops               numeric(12, 3) NOT NULL DEFAULT 0,
    min_vram_mb              bigint NOT NULL DEFAULT 0,
    allocation_second_micros bigint NOT NULL CHECK (allocation_second_micros >= 0),
    PRIMARY KEY (price_id, min_tflops, min_vram_mb)
);

CREATE FUNCTION billing_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused (load a new version instead)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER prices_append_only BEFORE UPDATE OR DELETE ON prices
    FOR EACH ROW EXECUTE FUNCTION billing_refuse_change();
CREATE TRIGGER prices_no_truncate BEFORE TRUNCATE ON prices
    FOR EACH STATEMENT EXECUTE FUNCTION billing_refuse_change();
CREATE TRIGGER price_gpu_classes_append_only BEFORE UPDATE OR DELETE ON price_gpu_classes
    FOR EACH ROW EXECUTE FUNCTION billing_refuse_change();

-- The price in force for a usage event.
CREATE FUNCTION billing_price_for(p_tenant text, p_provider text, p_model text, p_at timestamptz,
                                  p_tflops numeric, p_vram bigint)
    RETURNS TABLE (price_id bigint, currency text, prompt_per_1k_micros bigint,
                   completion_per_1k_micros bigint, request_micros bigint,
                   allocation_second_micros bigint)
    LANGUAGE sql STABLE AS $$
    SELECT p.price_id, p.currency, p.prompt_per_1k_micros, p.completion_per_1k_micros,
           p.request_micros,
           coalesce((SELECT g.allocation_second_micros FROM price_gpu_classes g
                      WHERE g.price_id = p.price_id AND coalesce(p_tflops, 0) >= g.min_tflops
                        AND coalesce(p_vram, 0) >= g.min_vram_mb
                      ORDER BY g.min_tflops DESC, g.min_vram_mb DESC LIMIT 1),
                    p.allocation_second_micros)
      FROM prices p
     WHERE p.provider = p_provider AND p.model = p_model AND p.effective_from <= p_at
       AND (p.tenant_id = p_tenant OR p.tenant_id IS NULL)
     ORDER BY p.tenant_id IS NULL, p.effective_from DESC
     LIMIT 1
$$;

-- Loads one price-book entry (an object of the prices.json format). Returns
-- 'inserted', or 'unchanged' when the same version is already loaded with the
-- same figures; a different figure for an existing version is refused.
CREATE FUNCTION billing_load_price(e jsonb, p_source text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
    v_old prices;
    v_classes jsonb := coalesce(e -> 'gpu_classes', '[]');
    v_old_classes jsonb;
BEGIN
    INSERT INTO prices (provider, model, tenant_id, currency, effective_from, prompt_per_1k_micros,
                        completion_per_1k_micros, request_micros, allocation_second_micros, source)
    VALUES (e ->> 'provider', e ->> 'model', e ->> 'tenant_id', e ->> 'currency',
            (e ->> 'effective_from')::timestamptz,
            coalesce((e ->> 'prompt_per_1k_micros')::bigint, 0),
            coalesce((e ->> 'completion_per_1k_micros')::bigint, 0),
            coalesce((e ->> 'request_micros')::bigint, 0),
            coalesce((e ->> 'allocation_second_micros')::bigint, 0), p_source)
    ON CONFLICT DO NOTHING
    RETURNING price_id INTO v_id;
    IF v_id IS NOT NULL THEN
        INSERT INTO price_gpu_classes (price_id, min_tflops, min_vram_mb, allocation_second_micros)
        SELECT v_id, coalesce((c ->> 'min_tflops')::numeric, 0),
               coalesce((c ->> 'min_vram_mb')::bigint, 0), (c ->> 'allocation_second_micros')::bigint
          FROM jsonb_array_elements(v_classes) c;
        RETURN 'inserted';
    END IF;
    SELECT * INTO v_old FROM prices
     WHERE provider = e ->> 'provider' AND model = e ->> 'model'
       AND coalesce(tenant_id, '') = coalesce(e ->> 'tenant_id', '')
       AND effective_from = (e ->> 'effective_from')::timestamptz;
    SELECT coalesce(jsonb_agg(jsonb_build_array(min_tflops, min_vram_mb, allocation_second_micros)
                              ORDER BY min_tflops, min_vram_mb), '[]')
      INTO v_old_classes FROM price_gpu_classes WHERE price_id = v_old.price_id;
    IF v_old.currency IS DISTINCT FROM e ->> 'currency'
       OR v_old.prompt_per_1k_micros <> coalesce((e ->> 'prompt_per_1k_micros')::bigint, 0)
       OR v_old.completion_per_1k_micros <> coalesce((e ->> 'completion_per_1k_micros')::bigint, 0)
       OR v_old.request_micros <> coalesce((e ->> 'request_micros')::bigint, 0)
       OR v_old.allocation_second_micros <> coalesce((e ->> 'allocation_second_micros')::bigint, 0)
       OR v_old_classes <> (SELECT coalesce(jsonb_agg(jsonb_build_array(
                                   coalesce((c ->> 'min_tflops')::numeric, 0)::numeric(12, 3),
                                   coalesce((c ->> 'min_vram_mb')::bigint, 0),
                                   (c ->> 'allocation_second_micros')::bigint)
                                   ORDER BY coalesce((c ->> 'min_tflops')::numeric, 0),
                                            coalesce((c ->> 'min_vram_mb')::bigint, 0)), '[]')
                              FROM jsonb_array_elements(v_classes) c) THEN
        RAISE EXCEPTION 'price % / % (tenant %) effective % already loaded as price_id % with other figures: prices are never edited in place, add a version with a later effective_from',
            e ->> 'provider', e ->> 'model', coalesce(e ->> 'tenant_id', 'list price'),
            e ->> 'effective_from', v_old.price_id
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN 'unchanged';
END $$;

-- ---------------------------------------------------------------- usage
-- The backbone's usage table becomes a table partitioned by month of
-- occurred_at, with its cost. Unique event_id across partitions is kept by
-- usage_event_ids (a partitioned table's unique keys must contain the
-- partition key, and a re-run task reports the same event_id at another time).
ALTER TABLE usage RENAME TO usage_001;
ALTER TABLE usage_001 RENAME CONSTRAINT usage_pkey TO usage_001_pkey;
ALTER INDEX usage_tenant_time RENAME TO usage_001_tenant_time;

CREATE TABLE usage (
    event_id                 text NOT NULL,
    request_id               text NOT NULL,
    task_id                  text NOT NULL,
    tenant_id                text NOT NULL,
    model                    text NOT NULL,
    provider                 text NOT NULL,
    pool                     text,
    allocation_id            text,
    allocation_seconds       numeric(14, 3) NOT NULL DEFAULT 0,
    tflops                   numeric(12, 3),
    vram_mb                  bigint,
    prompt_tokens            bigint NOT NULL DEFAULT 0,
    completion_tokens        bigint NOT NULL DEFAULT 0,
    request_bytes            bigint NOT NULL DEFAULT 0,
    response_bytes           bigint NOT NULL DEFAULT 0,
    attempts                 int NOT NULL DEFAULT 1,
    allocate_ms              bigint,
    inference_ms             bigint,
    release_ms               bigint,
    total_ms                 bigint,
    occurred_at              timestamptz NOT NULL,
    -- clock_timestamp(), not now(): an invoice run's cutoff must order after
    -- every row committed before it and before every row inserted after it.
    recorded_at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- cost: NULL price_id = no price in force yet (re-costed by the invoice run)
    price_id                 bigint REFERENCES prices (price_id),
    currency                 text,
    allocation_rate_micros   bigint,               -- per second, after the GPU class
    cost_prompt_micros       bigint,
    cost_completion_micros   bigint,
    cost_allocation_micros   bigint,
    cost_request_micros      bigint,
    cost_micros              bigint,               -- the sum of the four
    PRIMARY KEY (event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX usage_tenant_time ON usage (tenant_id, occurred_at);
CREATE INDEX usage_recorded ON usage USING brin (recorded_at);
CREATE INDEX usage_unpriced ON usage (occurred_at) WHERE price_id IS NULL;
CREATE TABLE usage_default PARTITION OF usage DEFAULT;

CREATE TABLE usage_event_ids (
    event_id    text PRIMARY KEY,
    occurred_at timestamptz NOT NULL
);

-- Creates the partition of the month of p_month (moving its rows out of the
-- default partition, if any). Returns its name. Safe to call twice.
CREATE FUNCTION usage_ensure_partition(p_month date) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    m date := date_trunc('month', p_month)::date;
    v_name text := format('usage_%s', to_char(m, 'YYYY_MM'));
    v_from timestamptz := billing_period_start(m);
    v_to timestamptz := billing_period_start((m + interval '1 month')::date);
BEGIN
    IF to_regclass(v_name) IS NOT NULL THEN
        RETURN v_name;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE usage INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', v_name);
    EXECUTE format('WITH moved AS (DELETE FROM usage_default WHERE occurred_at >= %L AND occurred_at < %L'
                   ' RETURNING *) INSERT INTO %I SELECT * FROM moved', v_from, v_to, v_name);
    EXECUTE format('ALTER TABLE usage ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   v_name, v_from, v_to);
    RETURN v_name;
END $$;

-- Detaches a month's partition for archiving (pg_dump it, then drop it).
-- Its event ids go too: redelivery that old is beyond Kafka's retention.
CREATE FUNCTION usage_detach_partition(p_month date) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    m date := date_trunc('month', p_month)::date;
    v_name text := format('usage_%s', to_char(m, 'YYYY_MM'));
BEGIN
    IF to_regclass(v_name) IS NULL THEN
        RAISE EXCEPTION 'no partition %', v_name;
    END IF;
    EXECUTE format('ALTER TABLE usage DETACH PARTITION %I', v_name);
    DELETE FROM usage_event_ids WHERE occurred_at >= billing_period_start(m)
       AND occurred_at < billing_period_start((m + interval '1 month')::date);
    RETURN v_name;
END $$;

DO $$
DECLARE
    m date;
BEGIN
    FOR m IN SELECT DISTINCT billing_period(occurred_at) FROM usage_001
             UNION SELECT (billing_period(now()) + make_interval(months => k))::date
                     FROM generate_series(-1, 3) k LOOP
        PERFORM usage_ensure_partition(m);
    END LOOP;
END $$;

INSERT INTO usage (event_id, request_id, task_id, tenant_id, model, provider, pool, allocation_id,
                   allocation_seconds, tflops, vram_mb, prompt_tokens, completion_tokens,
                   request_bytes, response_bytes, attempts, allocate_ms, inference_ms, release_ms,
                   total_ms, occurred_at, recorded_at)
SELECT event_id, request_id, task_id, tenant_id, model, provider, pool, allocation_id,
       allocation_seconds, tflops, vram_mb, prompt_tokens, completion_tokens, request_bytes,
       response_bytes, attempts, allocate_ms, inference_ms, release_ms, total_ms, occurred_at,
       recorded_at
  FROM usage_001;
INSERT INTO usage_event_ids (event_id, occurred_at) SELECT event_id, occurred_at FROM usage_001;
DROP TABLE usage_001;

-- Costs usage rows that had no price in force when recorded (prices loaded
-- later with an earlier effective_from), up to p_before. Returns rows costed.
CREATE FUNCTION billing_recost(p_before timestamptz) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    WITH up AS (
        UPDATE usage u
           SET price_id = p.price_id, currency = p.currency,
               allocation_rate_micros = p.allocation_second_micros,
               cost_prompt_micros = billing_micros(u.prompt_tokens, p.prompt_per_1k_micros, 1000),
               cost_completion_micros = billing_micros(u.completion_tokens, p.completion_per_1k_micros, 1000),
               cost_allocation_micros = billing_micros(u.allocation_seconds, p.allocation_second_micros, 1),
               cost_request_micros = p.request_micros,
               cost_micros = billing_micros(u.prompt_tokens, p.prompt_per_1k_micros, 1000)
                           + billing_micros(u.completion_tokens, p.completion_per_1k_micros, 1000)
                           + billing_micros(u.allocation_seconds, p.allocation_second_micros, 1)
                           + p.request_micros
          FROM usage v
          CROSS JOIN LATERAL billing_price_for(v.tenant_id, v.provider, v.model, v.occurred_at,
                                               v.tflops, v.vram_mb) p
         WHERE u.price_id IS NULL AND u.occurred_at < p_before
           AND v.event_id = u.event_id AND v.occurred_at = u.occurred_at AND v.price_id IS NULL
        RETURNING u.tenant_id, u.occurred_at, u.cost_micros),
    s AS (SELECT tenant_id, billing_period(occurred_at) AS period, sum(cost_micros) AS cost,
                 count(*) AS rows FROM up GROUP BY 1, 2),
    spend AS (  -- budgets count costed usage only: add what is costed now
        UPDATE budget_periods b SET spent_micros = b.spent_micros + s.cost,
                                    usage_rows = b.usage_rows + s.rows, updated_at = now()
          FROM s WHERE b.tenant_id = s.tenant_id AND b.period = s.period)
    SELECT count(*) INTO n FROM up;
    RETURN n;
END $$;

-- ---------------------------------------------------------------- budgets
-- One row per tenant and period with a budget: spent is costed usage (added
-- by the ledger), reserved is the estimate of admitted jobs not ended yet.
-- Admission is one conditional upsert on this row, so several dispatchers
-- serialise on its row lock.
CREATE TABLE budget_periods (
    tenant_id         text NOT NULL,
    period            date NOT NULL,
    currency          text NOT NULL,
    monthly_micros    bigint NOT NULL,
    hard_limit_micros bigint,                      -- NULL: no hard limit
    spent_micros      bigint NOT NULL DEFAULT 0,
    usage_rows        bigint NOT NULL DEFAULT 0,
    reserved_micros   bigint NOT NULL DEFAULT 0,
    rejected          bigint NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, period)
);

CREATE TABLE budget_reservations (
    request_id  text PRIMARY KEY,
    tenant_id   text NOT NULL,
    period      date NOT NULL,
    micros      bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Soft-limit warnings already emitted: the unique key is the dedupe, so
-- several dispatchers emit each (tenant, period, threshold) once.
CREATE TABLE budget_warnings (
    tenant_id     text NOT NULL,
    period        date NOT NULL,
    threshold_pct int NOT NULL,
    used_micros   bigint NOT NULL,
    emitted_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, period, threshold_pct)
);

-- A job that ended gives its reservation back (its usage, once costed,
-- counts as spent).
CREATE FUNCTION budget_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH r AS (DELETE FROM budget_reservations WHERE request_id = NEW.request_id
               RETURNING tenant_id, period, micros)
    UPDATE budget_periods b SET reserved_micros = greatest(0, b.reserved_micros - r.micros),
                                updated_at = now()
      FROM r WHERE b.tenant_id = r.tenant_id AND b.period = r.period;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_budget_release AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (NEW.status NOT IN ('running', 'completing'))
    EXECUTE FUNCTION budget_release();

-- ---------------------------------------------------------------- invoices
-- A period is closed for a tenant by an invoice run (tenant_id NULL: for
-- every tenant). Usage of a closed period recorded after its cutoff is late:
-- it goes onto the tenant's next invoice as adjustment lines.
CREATE TABLE billing_closures (
    period    date NOT NULL,
    tenant_id text,
    cutoff    timestamptz NOT NULL,
    closed_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX billing_closures_key ON billing_closures (period, coalesce(tenant_id, ''));

CREATE TABLE invoices (
    invoice_id         bigserial PRIMARY KEY,
    tenant_id          text NOT NULL,
    period             date NOT NULL,
    currency           text NOT NULL,
    status             text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'issued')),
    cutoff             timestamptz NOT NULL,      -- usage recorded up to here
    usage_micros       bigint NOT NULL DEFAULT 0,
    adjustment_micros  bigint NOT NULL DEFAULT 0,
    total_micros       bigint NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    issued_at          timestamptz,
    UNIQUE (tenant_id, period, currency)
);

CREATE TABLE invoice_lines (
    invoice_id        bigint NOT NULL REFERENCES invoices (invoice_id),
    line_no           int NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('usage', 'adjustment')),
    usage_period      date NOT NULL,               -- period the usage occurred in
    provider          text NOT NULL,
    model             text NOT NULL,
    price_id          bigint NOT NULL REFERENCES prices (price_id),
    component         text NOT NULL CHECK (component IN ('prompt_tokens', 'completion_tokens',
                                                         'allocation_seconds', 'requests')),
    quantity          numeric NOT NULL,
    unit              text NOT NULL,
    unit_price_micros bigint NOT NULL,
    amount_micros     bigint NOT NULL,             -- sum of the usage rows' rounded costs
    usage_rows        bigint NOT NULL,
    PRIMARY KEY (invoice_id, line_no)
);

CREATE FUNCTION invoices_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION '% cannot be truncated: issued invoices never change', TG_TABLE_NAME
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF OLD.status = 'issued' THEN
        RAISE EXCEPTION 'invoice % is issued: % refused', OLD.invoice_id, TG_OP
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;
CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION invoices_guard();
CREATE TRIGGER invoices_no_truncate BEFORE TRUNCATE ON invoices
    FOR EACH STATEMENT EXECUTE FUNCTION invoices_guard();

CREATE FUNCTION invoice_lines_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION '% cannot be truncated: issued invoices never change', TG_TABLE_NAME
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    v_id := CASE WHEN TG_OP = 'INSERT' THEN NEW.invoice_id ELSE OLD.invoice_id END;
    IF EXISTS (SELECT 1 FROM invoices WHERE invoice_id = v_id AND status = 'issued')
       OR (TG_OP = 'UPDATE' AND EXISTS (SELECT 1 FROM invoices
                                         WHERE invoice_id = NEW.invoice_id AND status = 'issued')) THEN
        RAISE EXCEPTION 'invoice % is issued: % of its lines refused', v_id, TG_OP
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;
CREATE TRIGGER invoice_lines_immutable BEFORE INSERT OR UPDATE OR DELETE ON invoice_lines
    FOR EACH ROW EXECUTE FUNCTION invoice_lines_guard();
CREATE TRIGGER invoice_lines_no_truncate BEFORE TRUNCATE ON invoice_lines
    FOR EACH STATEMENT EXECUTE FUNCTION invoice_lines_guard();

-- Invoices the period p_period (first day of a month) for every tenant, or for
-- p_tenant. Idempotent: a tenant whose period is closed gets nothing new.
-- Returns the number of invoices created. Ledger inserts wait while it runs
-- (SHARE lock on usage) so its cutoff cleanly splits usage into "on this
-- invoice" and "late".
CREATE FUNCTION billing_invoice_run(p_period date, p_tenant text DEFAULT NULL)
    RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_start timestamptz := billing_period_start(p_period);
    v_end timestamptz := billing_period_start((p_period + interval '1 month')::date);
    v_cutoff timestamptz;
    v_min_cut timestamptz;
    v_unpriced text;
    v_n integer;
BEGIN
    IF p_period IS NULL OR p_period <> date_trunc('month', p_period)::date THEN
        RAISE EXCEPTION 'period must be the first day of a month, not %', p_period;
    END IF;
    IF v_end > now() THEN
        RAISE EXCEPTION 'period % is not over yet (it ends %)', to_char(p_period, 'YYYY-MM'), v_end;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('gantry.billing_invoice_run'));
    IF EXISTS (SELECT 1 FROM billing_closures WHERE period = p_period
                AND (tenant_id IS NULL OR tenant_id = p_tenant)) THEN
        RETURN 0;
    END IF;
    LOCK TABLE usage IN SHARE MODE;
    v_cutoff := clock_timestamp();
    PERFORM billing_recost(v_end);
    SELECT coalesce(min(cutoff), 'infinity') INTO v_min_cut FROM billing_closures;

    CREATE TEMP TABLE run_rows ON COMMIT DROP AS
    WITH done AS (SELECT tenant_id FROM billing_closures WHERE period = p_period),
    regular AS (
        SELECT u.* FROM usage u
         WHERE u.occurred_at >= v_start AND u.occurred_at < v_end AND u.recorded_at <= v_cutoff
           AND (p_tenant IS NULL OR u.tenant_id = p_tenant)
           AND u.tenant_id NOT IN (SELECT tenant_id FROM done)),
    late AS (
        SELECT u.* FROM usage u
          LEFT JOIN billing_closures qa ON qa.period = billing_period(u.occurred_at)
                                       AND qa.tenant_id IS NULL
          LEFT JOIN billing_closures qt ON qt.period = billing_period(u.occurred_at)
                                       AND qt.tenant_id = u.tenant_id
         WHERE u.occurred_at < v_start AND u.recorded_at > v_min_cut AND u.recorded_at <= v_cutoff
           AND (p_tenant IS NULL OR u.tenant_id = p_tenant)
           AND u.tenant_id NOT IN (SELECT tenant_id FROM done)
           AND (qa.period IS NOT NULL OR qt.period IS NOT NULL)
           AND u.recorded_at > greatest(qa.cutoff, qt.cutoff,
                   (SELECT max(i.cutoff) FROM invoices i
                     WHERE i.tenant_id = u.tenant_id AND i.period > billing_period(u.occurred_at)
                       AND i.period < p_period)))
    SELECT x.tenant_id, x.currency, x.kind, x.usage_period, x.provider, x.model, x.price_id,
           x.allocation_rate_micros, count(*) AS n,
           sum(x.prompt_tokens) AS prompt_tokens, sum(x.completion_tokens) AS completion_tokens,
           sum(x.allocation_seconds) AS allocation_seconds,
           sum(x.cost_prompt_micros) AS cost_prompt, sum(x.cost_completion_micros) AS cost_completion,
           sum(x.cost_allocation_micros) AS cost_allocation, sum(x.cost_request_micros) AS cost_request
      FROM (SELECT r.*, 'usage' AS kind, p_period AS usage_period FROM regular r
            UNION ALL
            SELECT l.*, 'adjustment', billing_period(l.occurred_at) FROM late l) x
     GROUP BY 1, 2, 3, 4, 5, 6, 7, 8;

    SELECT string_agg(DISTINCT format('%s/%s (tenant %s)', provider, model, tenant_id), ', ')
      INTO v_unpriced FROM run_rows WHERE price_id IS NULL;
    IF v_unpriced IS NOT NULL THEN
        RAISE EXCEPTION 'usage without a price in force: %; load prices (gantry prices load) and run again',
            v_unpriced;
    END IF;

    CREATE TEMP TABLE run_invoices ON COMMIT DROP AS
    WITH ins AS (
        INSERT INTO invoices (tenant_id, period, currency, cutoff)
        SELECT DISTINCT tenant_id, p_period, currency, v_cutoff FROM run_rows
        RETURNING invoice_id, tenant_id, currency)
    SELECT * FROM ins;

    INSERT INTO invoice_lines (invoice_id, line_no, kind, usage_period, provider, model, price_id,
                               component, quantity, unit, unit_price_micros, amount_micros,
                               usage_rows)
    SELECT i.invoice_id,
           row_number() OVER (PARTITION BY i.invoice_id
                              ORDER BY r.kind DESC, r.usage_period, r.provider, r.model, r.price_id,
                                       c.ord, r.allocation_rate_micros),
           r.kind, r.usage_period, r.provider, r.model, r.price_id, c.component, c.quantity, c.unit,
           c.unit_price, c.amount, r.n
      FROM run_rows r
      JOIN run_invoices i ON i.tenant_id = r.tenant_id AND i.currency = r.currency
      JOIN prices p ON p.price_id = r.price_id
     CROSS JOIN LATERAL (VALUES
           (1, 'prompt_tokens', round(r.prompt_tokens / 1000.0, 3), '1k tokens', p.prompt_per_1k_micros, r.cost_prompt),
           (2, 'completion_tokens', round(r.completion_tokens / 1000.0, 3), '1k tokens', p.completion_per_1k_micros, r.cost_completion),
           (3, 'allocation_seconds', r.allocation_seconds, 'second', r.allocation_rate_micros, r.cost_allocation),
           (4, 'requests', r.n::numeric, 'request', p.request_micros, r.cost_request))
           AS c(ord, component, quantity, unit, unit_price, amount)
     WHERE c.quantity <> 0 AND (c.unit_price <> 0 OR c.amount <> 0);

    UPDATE invoices i
       SET usage_micros = coalesce(s.usage_micros, 0), adjustment_micros = coalesce(s.adj_micros, 0),
           total_micros = coalesce(s.total, 0), status = 'issued', issued_at = now()
      FROM run_invoices ri
      LEFT JOIN (SELECT invoice_id,
                        sum(amount_micros) FILTER (WHERE kind = 'usage') AS usage_micros,
                        sum(amount_micros) FILTER (WHERE kind = 'adjustment') AS adj_micros,
                        sum(amount_micros) AS total
                   FROM invoice_lines GROUP BY invoice_id) s ON s.invoice_id = ri.invoice_id
     WHERE i.invoice_id = ri.invoice_id;

    INSERT INTO billing_closures (period, tenant_id, cutoff) VALUES (p_period, p_tenant, v_cutoff);
    SELECT count(*) INTO v_n FROM run_invoices;
    RETURN v_n;
END $$;

-- ---------------------------------------------------------------- finance
-- gantry_finance reads through these views only: no prompts (jobs.request,
-- tasks.output), no outputs, no keys. Grant it to finance login roles.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gantry_finance') THEN
        CREATE ROLE gantry_finance NOLOGIN;
    END IF;
END $$;

CREATE VIEW finance_invoices AS
    SELECT invoice_id, tenant_id, to_char(period, 'YYYY-MM') AS period, currency, status, cutoff,
           usage_micros, adjustment_micros, total_micros, issued_at
      FROM invoices WHERE status = 'issued';
CREATE VIEW finance_invoice_lines AS
    SELECT l.invoice_id, l.line_no, l.kind, to_char(l.usage_period, 'YYYY-MM') AS usage_period,
           l.provider, l.model, l.price_id, l.component, l.quantity, l.unit, l.unit_price_micros,
           l.amount_micros, l.usage_rows
      FROM invoice_lines l JOIN invoices i ON i.invoice_id = l.invoice_id AND i.status = 'issued';
CREATE VIEW finance_usage_daily AS
    SELECT tenant_id, (occurred_at AT TIME ZONE 'UTC')::date AS day, provider, model, currency,
           price_id, count(*) AS usage_rows, sum(prompt_tokens) AS prompt_tokens,
           sum(completion_tokens) AS completion_tokens, sum(allocation_seconds) AS allocation_seconds,
           sum(cost_micros) AS cost_micros
      FROM usage GROUP BY 1, 2, 3, 4, 5, 6;
CREATE VIEW finance_prices AS
    SELECT p.price_id, p.provider, p.model, p.tenant_id, p.currency, p.effective_from,
           p.prompt_per_1k_micros, p.completion_per_1k_micros, p.request_micros,
           p.allocation_second_micros,
           (SELECT jsonb_agg(jsonb_build_object('min_tflops', g.min_tflops, 'min_vram_mb', g.min_vram_mb,
                                                'allocation_second_micros', g.allocation_second_micros)
                             ORDER BY g.min_tflops, g.min_vram_mb)
              FROM price_gpu_classes g WHERE g.price_id = p.price_id) AS gpu_classes
      FROM prices p;
CREATE VIEW finance_budgets AS
    SELECT tenant_id, to_char(period, 'YYYY-MM') AS period, currency, monthly_micros,
           hard_limit_micros, spent_micros, reserved_micros, rejected
      FROM budget_periods;

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM gantry_finance;
GRANT USAGE ON SCHEMA public TO gantry_finance;
GRANT SELECT ON finance_invoices, finance_invoice_lines, finance_usage_daily, finance_prices,
                finance_budgets TO gantry_finance;
