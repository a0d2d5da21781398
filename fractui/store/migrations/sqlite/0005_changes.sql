-- One counter per topic of the change feed (fractui.store.base.TOPICS), bumped in the same
-- transaction as the change it announces: a feed that sees SQLite's data_version move reads
-- these to tell what changed.
CREATE TABLE changes (
    topic   TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
INSERT INTO changes (topic, version) VALUES ('jobs', 0), ('hosts', 0), ('lease', 0)
