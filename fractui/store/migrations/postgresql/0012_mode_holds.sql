-- GPUs held back from MIG mode changes after one failed (fractui/scheduler/backoff.py), by the
-- GPU's UUID: the failures in a row and ``until`` by the lease holder's clock. The lease
-- holder keeps them here so the next holder goes on from them, and so every TUI's placement
-- preview and `fractui place` offer no change the holder would not make.
CREATE TABLE mode_holds (
    uuid     TEXT NOT NULL PRIMARY KEY,
    failures INTEGER NOT NULL,
    until    DOUBLE PRECISION NOT NULL
);

-- The lease holder's record: the guard (0004) holds everyone else off the table.
CREATE TRIGGER fractui_guard BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON mode_holds
    FOR EACH STATEMENT EXECUTE FUNCTION fractui_guard_admins_only();

-- Every role that may read the jobs may read the holds too, as for the cordons (0007): its
-- TUI reads them with the jobs.
DO $$
DECLARE
    reader TEXT;
BEGIN
    FOR reader IN SELECT DISTINCT r.rolname FROM pg_class c, aclexplode(c.relacl) a
                  JOIN pg_roles r ON r.oid = a.grantee
                  WHERE c.oid = 'jobs'::regclass AND a.privilege_type = 'SELECT' LOOP
        EXECUTE format('GRANT SELECT ON mode_holds TO %I', reader);
    END LOOP;
END
$$
