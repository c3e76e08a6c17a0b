-- 031_batch_price.sql: batch traffic's own price (issue 17; docs/billing.md).
--
-- The vendors price batch work apart (OpenAI and Anthropic halve it), so the
-- price book can too: a price version with batch = true prices only the usage
-- of requests that came through a batch API (gantry-api's lines,
-- api_batch_lines), and the usage row says which it was (usage.batch, set by
-- the ledger from api_batch_lines). For a batch event the lookup keeps the
-- book's order of keys (exact model before '*', the tenant's own price before
-- the list price) and, within each key, prefers its batch version: a tenant
-- with its own price keeps it for batch work unless it also has its own batch
-- price, so an override is never undercut by the list batch price nor made
-- dearer by it. With no batch version for any key, batch work pays the same
-- price as any other. A batch version is its own price_id, so invoices show
-- it on its own lines.
ALTER TABLE prices ADD COLUMN batch boolean NOT NULL DEFAULT false;
DROP INDEX prices_version;
CREATE UNIQUE INDEX prices_version
    ON prices (provider, model, coalesce(tenant_id, ''), batch, effective_from);

ALTER TABLE usage ADD COLUMN batch boolean NOT NULL DEFAULT false;

DROP FUNCTION billing_price_for(text, text, text, timestamptz, numeric, bigint);
CREATE FUNCTION billing_price_for(p_tenant text, p_provider text, p_model text,
                                  p_at timestamptz, p_tflops numeric, p_vram bigint,
                                  p_batch boolean)
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
     WHERE p.provider = p_provider AND (p.model = p_model OR p.model = '*')
       AND p.effective_from <= p_at
       AND (p.tenant_id = p_tenant OR p.tenant_id IS NULL)
       AND (NOT p.batch OR p_batch)
     ORDER BY p.model = '*', p.tenant_id IS NULL, p.batch DESC, p.effective_from DESC
     LIMIT 1
$$;

-- billing_recost with the batch flag (the rest as in 002_billing.sql).
CREATE OR REPLACE FUNCTION billing_recost(p_before timestamptz) RETURNS bigint
    LANGUAGE plpgsql AS $$
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
                                               v.tflops, v.vram_mb, v.batch) p
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

-- billing_load_price with the batch key: an entry's "batch": true loads a
-- batch version; the same version with other figures is refused as before.
CREATE OR REPLACE FUNCTION billing_load_price(e jsonb, p_source text) RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
    v_old prices;
    v_batch boolean := coalesce((e ->> 'batch')::boolean, false);
    v_classes jsonb := coalesce(e -> 'gpu_classes', '[]');
    v_old_classes jsonb;
BEGIN
    INSERT INTO prices (provider, model, tenant_id, currency, effective_from, prompt_per_1k_micros,
                        completion_per_1k_micros, request_micros, allocation_second_micros, source,
                        batch)
    VALUES (e ->> 'provider', e ->> 'model', e ->> 'tenant_id', e ->> 'currency',
            (e ->> 'effective_from')::timestamptz,
            coalesce((e ->> 'prompt_per_1k_micros')::bigint, 0),
            coalesce((e ->> 'completion_per_1k_micros')::bigint, 0),
            coalesce((e ->> 'request_micros')::bigint, 0),
            coalesce((e ->> 'allocation_second_micros')::bigint, 0), p_source, v_batch)
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
       AND coalesce(tenant_id, '') = coalesce(e ->> 'tenant_id', '') AND batch = v_batch
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
            e ->> 'provider', e ->> 'model',
            coalesce(e ->> 'tenant_id', 'list price') || CASE WHEN v_batch THEN ', batch' ELSE '' END,
            e ->> 'effective_from', v_old.price_id
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN 'unchanged';
END $$;

CREATE OR REPLACE VIEW finance_prices AS
    SELECT p.price_id, p.provider, p.model, p.tenant_id, p.currency, p.effective_from,
           p.prompt_per_1k_micros, p.completion_per_1k_micros, p.request_micros,
           p.allocation_second_micros,
           (SELECT jsonb_agg(jsonb_build_object('min_tflops', g.min_tflops, 'min_vram_mb', g.min_vram_mb,
                                                'allocation_second_micros', g.allocation_second_micros)
                             ORDER BY g.min_tflops, g.min_vram_mb)
              FROM price_gpu_classes g WHERE g.price_id = p.price_id) AS gpu_classes,
           p.batch
      FROM prices p;
