-- Hosts and GPUs an admin took out of service: ``cordon`` (no new work) or ``drain`` (no new
-- work, said "drained" once nothing is left on it). ``gpu`` -1: the whole host (a primary key
-- cannot hold NULL on PostgreSQL, so both dialects say it so).
CREATE TABLE cordons (
    host  TEXT NOT NULL,
    gpu   INTEGER NOT NULL,
    mode  TEXT NOT NULL,
    actor TEXT NOT NULL,
    why   TEXT NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (host, gpu)
)
