-- 015_usage_ingest.sql: the usage ledger at 200,000 events/s (issue 15).
--
-- usage.price_id loses its foreign key to prices. The check ran once per
-- inserted row (a trigger doing an index lookup: a sixth of the ledger's
-- statement) and guards nothing that is not guarded already: prices are
-- append-only (billing_refuse_change refuses UPDATE, DELETE and TRUNCATE), and
-- the ledger's statement and billing_recost take every price_id they write
-- from a join on prices in the same statement. invoice_lines keeps its key.
ALTER TABLE usage DROP CONSTRAINT IF EXISTS usage_price_id_fkey;
