-- What a scheduler lease holder remembers that the next holder must go on from: the lost-host
-- timers (a host first seen unreachable, kind 'host', name its name; a job's GPU first seen
-- missing, kind 'job', name the job's id), ``since`` by the holder's clock; and the stops
-- sent (host, key), forgotten once the copy they stopped is known ended.
CREATE TABLE lost_clocks (
    kind  TEXT NOT NULL,
    name  TEXT NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE stops_sent (
    host    TEXT NOT NULL,
    key     TEXT NOT NULL,
    sent_at REAL NOT NULL,
    PRIMARY KEY (host, key)
)
