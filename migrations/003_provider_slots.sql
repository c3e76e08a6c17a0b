-- 003_provider_slots.sql: provider limits shared by every worker process.
--
-- gantry_provider_slots: one row per slot of max_in_flight, per provider
-- (scope '') and per tenant at a provider (scope = tenant id). A row is held
-- while holder is set and lease_until is in the future; holders renew their
-- leases while alive, so a dead worker's slots come back when they lapse.
-- Workers take a free row with UPDATE ... (SELECT ... FOR UPDATE SKIP LOCKED).
CREATE TABLE gantry_provider_slots (
    provider    text NOT NULL,
    scope       text NOT NULL DEFAULT '',
    slot        int NOT NULL CHECK (slot >= 0),
    holder      text,                       -- worker process holding it, or NULL
    task_id     text,
    lease_until timestamptz,
    PRIMARY KEY (provider, scope, slot)
);
CREATE INDEX gantry_provider_slots_holder ON gantry_provider_slots (holder)
    WHERE holder IS NOT NULL;

-- Requests and tokens per calendar minute (rpm / tpm budgets).
CREATE TABLE gantry_provider_windows (
    provider text NOT NULL,
    scope    text NOT NULL DEFAULT '',
    minute   timestamptz NOT NULL,
    requests bigint NOT NULL DEFAULT 0,
    tokens   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (provider, scope, minute)
);
