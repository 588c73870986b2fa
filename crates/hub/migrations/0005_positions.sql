-- Change ids and export positions from a sequence instead of the single row of change_counter
-- (docs/hub.md, "The feed and its cursor"). The row lock on change_counter was held through
-- COMMIT, so every ingest transaction waited for the previous one's WAL flush: commits could
-- not share a flush and ingest ran one transaction at a time. Now a writer takes positions
-- with nextval while holding its own advisory lock (crates/hub/src/ingest/changes.rs,
-- WRITER_LOCK_CLASS and its backend pid) until COMMIT; a reader reads the sequence's last
-- value, then waits for the writers holding such a lock at that moment, and pages up to that
-- value in a snapshot taken afterwards.
CREATE SEQUENCE change_seq AS bigint MINVALUE 0 NO CYCLE;
SELECT setval('change_seq', (SELECT last FROM change_counter WHERE id = 1), true);
-- Dropped, so that a hub of an older version (which numbers from change_counter) fails loudly
-- instead of numbering beside the sequence: stop every hub before starting this version.
DROP TABLE change_counter;
