-- 016_invoice_run.sql: the invoice run for 10,000 tenants over 1M usage rows in
-- well under 2 s (issue 15). Same invoices, same lines, same guards; what
-- changed is how the work is done:
--
-- * invoice_lines are checked once per statement, not once per row. The row
--   triggers (invoice_lines_guard: a query per line; the two foreign keys: a
--   query each per line) cost more than building the invoices. An INSERT is now
--   checked by one AFTER ... FOR EACH STATEMENT trigger over its transition
--   table: every line's invoice exists and is not issued, every line's price
--   exists. UPDATE and DELETE of lines keep the row trigger (they are refused
--   for issued invoices; nothing else does them). Without the foreign keys,
--   invoices_guard refuses to delete an invoice that has lines; prices were
--   already append-only.
-- * run_rows is aggregated straight from the month's partition with only the
--   columns it needs (the late rows of closed periods separately), without the
--   CTE that kept the scan out of parallel workers; the run gets the memory for
--   its hash aggregate and sort (work_mem) and no JIT compilation (it costs more
--   than it saves at this size).
-- * invoice totals are summed over this run's lines only, not every line ever.

ALTER TABLE invoice_lines DROP CONSTRAINT IF EXISTS invoice_lines_invoice_id_fkey;
ALTER TABLE invoice_lines DROP CONSTRAINT IF EXISTS invoice_lines_price_id_fkey;

CREATE OR REPLACE FUNCTION invoices_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION '% cannot be truncated: issued invoices never change', TG_TABLE_NAME
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF OLD.status = 'issued' THEN
        RAISE EXCEPTION 'invoice % is issued: % refused', OLD.invoice_id, TG_OP
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM invoice_lines WHERE invoice_id = OLD.invoice_id) THEN
        RAISE EXCEPTION 'invoice % has lines: DELETE refused', OLD.invoice_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;

-- Lines inserted by one statement: their invoices exist and are drafts, their prices exist.
CREATE FUNCTION invoice_lines_insert_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    SELECT n.invoice_id INTO v_id FROM new_lines n
      LEFT JOIN invoices i ON i.invoice_id = n.invoice_id
     WHERE i.invoice_id IS NULL OR i.status = 'issued' LIMIT 1;
    IF FOUND THEN
        IF EXISTS (SELECT 1 FROM invoices WHERE invoice_id = v_id) THEN
            RAISE EXCEPTION 'invoice % is issued: INSERT of its lines refused', v_id
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RAISE EXCEPTION 'invoice line for invoice %, which does not exist', v_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT n.price_id INTO v_id FROM new_lines n
      LEFT JOIN prices p ON p.price_id = n.price_id
     WHERE p.price_id IS NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'invoice line with price %, which does not exist', v_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER invoice_lines_immutable ON invoice_lines;
CREATE TRIGGER invoice_lines_immutable BEFORE UPDATE OR DELETE ON invoice_lines
    FOR EACH ROW EXECUTE FUNCTION invoice_lines_guard();
CREATE TRIGGER invoice_lines_insert_checked AFTER INSERT ON invoice_lines
    REFERENCING NEW TABLE AS new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION invoice_lines_insert_guard();

CREATE OR REPLACE FUNCTION billing_invoice_run(p_period date, p_tenant text DEFAULT NULL)
    RETURNS integer LANGUAGE plpgsql
    SET work_mem = '128MB' SET jit = off AS $$
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

    -- Tenants already closed for this period have a non-NULL tenant_id here (a
    -- closure for every tenant returned above), so NOT EXISTS is the NOT IN of before.
    CREATE TEMP TABLE run_rows ON COMMIT DROP AS
    SELECT u.tenant_id, u.currency, 'usage'::text AS kind, p_period AS usage_period, u.provider,
           u.model, u.price_id, u.allocation_rate_micros, count(*) AS n,
           sum(u.prompt_tokens) AS prompt_tokens, sum(u.completion_tokens) AS completion_tokens,
           sum(u.allocation_seconds) AS allocation_seconds,
           sum(u.cost_prompt_micros) AS cost_prompt, sum(u.cost_completion_micros) AS cost_completion,
           sum(u.cost_allocation_micros) AS cost_allocation, sum(u.cost_request_micros) AS cost_request
      FROM usage u
     WHERE u.occurred_at >= v_start AND u.occurred_at < v_end AND u.recorded_at <= v_cutoff
       AND (p_tenant IS NULL OR u.tenant_id = p_tenant)
       AND NOT EXISTS (SELECT 1 FROM billing_closures d
                        WHERE d.period = p_period AND d.tenant_id = u.tenant_id)
     GROUP BY u.tenant_id, u.currency, u.provider, u.model, u.price_id, u.allocation_rate_micros
    UNION ALL
    SELECT u.tenant_id, u.currency, 'adjustment', billing_period(u.occurred_at), u.provider,
           u.model, u.price_id, u.allocation_rate_micros, count(*),
           sum(u.prompt_tokens), sum(u.completion_tokens), sum(u.allocation_seconds),
           sum(u.cost_prompt_micros), sum(u.cost_completion_micros),
           sum(u.cost_allocation_micros), sum(u.cost_request_micros)
      FROM usage u
      LEFT JOIN billing_closures qa ON qa.period = billing_period(u.occurred_at)
                                   AND qa.tenant_id IS NULL
      LEFT JOIN billing_closures qt ON qt.period = billing_period(u.occurred_at)
                                   AND qt.tenant_id = u.tenant_id
     WHERE u.occurred_at < v_start AND u.recorded_at > v_min_cut AND u.recorded_at <= v_cutoff
       AND (p_tenant IS NULL OR u.tenant_id = p_tenant)
       AND NOT EXISTS (SELECT 1 FROM billing_closures d
                        WHERE d.period = p_period AND d.tenant_id = u.tenant_id)
       AND (qa.period IS NOT NULL OR qt.period IS NOT NULL)
       AND u.recorded_at > greatest(qa.cutoff, qt.cutoff,
               (SELECT max(i.cutoff) FROM invoices i
                 WHERE i.tenant_id = u.tenant_id AND i.period > billing_period(u.occurred_at)
                   AND i.period < p_period))
     GROUP BY u.tenant_id, u.currency, billing_period(u.occurred_at), u.provider, u.model,
              u.price_id, u.allocation_rate_micros;

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
      LEFT JOIN (SELECT l.invoice_id,
                        sum(l.amount_micros) FILTER (WHERE l.kind = 'usage') AS usage_micros,
                        sum(l.amount_micros) FILTER (WHERE l.kind = 'adjustment') AS adj_micros,
                        sum(l.amount_micros) AS total
                   FROM invoice_lines l JOIN run_invoices r2 ON r2.invoice_id = l.invoice_id
                  GROUP BY l.invoice_id) s ON s.invoice_id = ri.invoice_id
     WHERE i.invoice_id = ri.invoice_id;

    INSERT INTO billing_closures (period, tenant_id, cutoff) VALUES (p_period, p_tenant, v_cutoff);
    SELECT count(*) INTO v_n FROM run_invoices;
    RETURN v_n;
END $$;
