-- The figures job follows the events' export positions instead of their ingest times
-- (crates/hub/src/figures.rs): exact, with no margin for late commits, since it reads up to a
-- horizon every position below which is committed; and one index less on store_events, which
-- every ingested event had to maintain.
ALTER TABLE figures_refresh ADD COLUMN done_pos bigint NOT NULL DEFAULT 0;
-- From where the time-based job got to, less its margin: everything after the first event
-- ingested within the margin is looked at again once (more than needed, nothing missed).
UPDATE figures_refresh f SET done_pos = coalesce(
    (SELECT min(export_pos) - 1 FROM store_events
     WHERE ingested_at >= f.done_through - interval '1 minute'),
    (SELECT max(export_pos) FROM store_events),
    0)
WHERE id = 1;
ALTER TABLE figures_refresh DROP COLUMN done_through;
DROP INDEX store_events_ingested;
