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
    charge          DOUBLE PRECISION NOT NULL,
    queued_at       DOUBLE PRECISION NOT NULL,    -- when this attempt began to wait
    started_at      DOUBLE PRECISION NOT NULL,
    ended_at        DOUBLE PRECISION,             -- NULL while it holds its slice
    outcome         TEXT,             -- done, failed, cancelled, requeued, preempted
    samples         INTEGER NOT NULL DEFAULT 0,
    sampled_from    DOUBLE PRECISION,
    sampled_until   DOUBLE PRECISION,
    memory_peak_mib INTEGER,
    memory_mean_mib DOUBLE PRECISION,
    util_samples    INTEGER NOT NULL DEFAULT 0,
    util_mean       DOUBLE PRECISION,             -- SM %, of one GPU; NULL where NVML gives none (MIG)
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
    bucket     DOUBLE PRECISION NOT NULL,
    model      TEXT,
    online_s   DOUBLE PRECISION NOT NULL DEFAULT 0,
    idle_s     DOUBLE PRECISION NOT NULL DEFAULT 0,
    held_s     DOUBLE PRECISION NOT NULL DEFAULT 0,  -- GPU-seconds charged to the jobs on it
    util_s     DOUBLE PRECISION NOT NULL DEFAULT 0,
    measured_s DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (host, gpu, bucket)
);
CREATE INDEX gpu_time_bucket ON gpu_time (bucket);

-- Usage is the scheduler's record: the guard (0004) holds everyone else off both tables.
CREATE TRIGGER fractui_guard BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON usage
    FOR EACH STATEMENT EXECUTE FUNCTION fractui_guard_admins_only();
CREATE TRIGGER fractui_guard BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON gpu_time
    FOR EACH STATEMENT EXECUTE FUNCTION fractui_guard_admins_only();

-- Every role that may read the jobs may read what they used (`fractui report`, the TUI).
DO $$
DECLARE
    reader TEXT;
BEGIN
    FOR reader IN SELECT DISTINCT r.rolname FROM pg_class c, aclexplode(c.relacl) a
                  JOIN pg_roles r ON r.oid = a.grantee
                  WHERE c.oid = 'jobs'::regclass AND a.privilege_type = 'SELECT' LOOP
        EXECUTE format('GRANT SELECT ON usage, gpu_time TO %I', reader);
    END LOOP;
END
$$
