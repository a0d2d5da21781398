-- Usage records (issue 16): one row per attempt of a job that held a slice, opened when it
-- starts and closed when it ends or leaves its host, in the same transaction as the job's own
-- change; what the agent sampled of it (memory, utilisation) kept on it as aggregates.
CREATE TABLE usage (
    job             INTEGER NOT NULL,
    attempt         INTEGER NOT NULL,
    team            TEXT,
    queue           TEXT NOT NULL,
    user_name       TEXT NOT NULL,    -- who submitted it (the audit's submit actor)
    host            TEXT NOT NULL,
    gpus            TEXT NOT NULL,    -- JSON list of GPU indexes
    model           TEXT,             -- the GPU model, as the host reported it
    profile         TEXT,
    memory_mib      INTEGER,
    charge          REAL NOT NULL,
    queued_at       REAL NOT NULL,    -- when this attempt began to wait
    started_at      REAL NOT NULL,
    ended_at        REAL,             -- NULL while it holds its slice
    outcome         TEXT,             -- done, failed, cancelled, requeued, preempted
    samples         INTEGER NOT NULL DEFAULT 0,
    sampled_from    REAL,
    sampled_until   REAL,
    memory_peak_mib INTEGER,
    memory_mean_mib REAL,
    util_samples    INTEGER NOT NULL DEFAULT 0,
    util_mean       REAL,             -- SM %, of one GPU; NULL where NVML gives none (MIG)
    util_note       TEXT,
    PRIMARY KEY (job, attempt)
);
CREATE INDEX usage_started ON usage (started_at);
CREATE INDEX usage_ended ON usage (ended_at);

-- What each GPU did, by time bucket: seconds seen online, seconds with nothing on it, and the
-- GPU's own utilisation where NVML gives it (util_s: percent-seconds / 100 over measured_s).
CREATE TABLE gpu_time (
    host       TEXT NOT NULL,
    gpu        INTEGER NOT NULL,
    bucket     REAL NOT NULL,
    model      TEXT,
    online_s   REAL NOT NULL DEFAULT 0,
    idle_s     REAL NOT NULL DEFAULT 0,
    held_s     REAL NOT NULL DEFAULT 0,  -- GPU-seconds charged to the jobs on it
    util_s     REAL NOT NULL DEFAULT 0,
    measured_s REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (host, gpu, bucket)
);
CREATE INDEX gpu_time_bucket ON gpu_time (bucket);
