-- One counter per topic of the change feed (fractui.store.base.TOPICS), as SQLite's store
-- keeps them: a reader that holds what it read at version N reads it again only once the
-- counter moved (the scheduler's jobs, thousands of rows, are most of a pass that finds
-- nothing new). The NOTIFY stays the wake; the counter is what a reader checks.
CREATE TABLE changes (
    topic   TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO changes (topic, version) VALUES ('jobs', 0), ('hosts', 0), ('lease', 0), ('logs', 0);
GRANT SELECT ON changes TO PUBLIC;
-- A change is announced by this function, in the change's transaction: it moves the counter
-- by one and notifies. It runs as its owner (the role that migrated the store), so a team
-- member who may change jobs needs no privilege on the counters, and can only ever move one
-- forward by one — never set it back to hide a change from a reader.
CREATE FUNCTION fractui_announce(topic TEXT) RETURNS VOID
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE changes SET version = version + 1 WHERE changes.topic = fractui_announce.topic;
    PERFORM pg_notify('fractui_changes', topic);
END
$$;
GRANT EXECUTE ON FUNCTION fractui_announce(TEXT) TO PUBLIC;
