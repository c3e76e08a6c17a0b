-- 060_response_cache.sql: the dispatcher's response cache (dispatcher/cache.c,
-- docs/routing.md). An entry is keyed by (tenant_id, cache_key): cache_key is
-- the SHA-256 of tenant, model, kind, the canonical (scrubbed) input and the
-- output-changing parameters, so no lookup can reach another tenant's rows.
-- output is the provider's output as the job's task returned it (before any
-- PII restore: a scrubbing tenant's entries hold tokens, never raw values).
-- jobs.cache_key / cache_ttl_ms: set at intake on a cacheable miss, read by
-- the coordinator that stores the entry once the job succeeded.
CREATE TABLE response_cache (
    tenant_id   text NOT NULL,
    cache_key   text NOT NULL,
    model       text NOT NULL,
    output      jsonb NOT NULL,
    bytes       bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, cache_key)
);
CREATE INDEX response_cache_age ON response_cache (tenant_id, created_at);
CREATE INDEX response_cache_expiry ON response_cache (expires_at);
REVOKE ALL ON response_cache FROM PUBLIC;

ALTER TABLE jobs ADD COLUMN cache_key text, ADD COLUMN cache_ttl_ms bigint;

-- A cache hit is billed under provider 'cache' and the request's model. With no
-- price loaded for it, the list price of ('cache', '*') applies: zero. The
-- price book lookup gains that wildcard: an exact model wins over '*'.
CREATE OR REPLACE FUNCTION billing_price_for(p_tenant text, p_provider text, p_model text,
                                             p_at timestamptz, p_tflops numeric, p_vram bigint)
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
     ORDER BY p.model = '*', p.tenant_id IS NULL, p.effective_from DESC
     LIMIT 1
$$;

INSERT INTO prices (provider, model, tenant_id, currency, effective_from, source)
VALUES ('cache', '*', NULL, 'USD', '1970-01-01T00:00:00Z', '060_response_cache.sql');
