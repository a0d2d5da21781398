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

-- On a store set up before this table, the admins' grants (ON ALL TABLES, run once) and the
-- team roles' missed it: every role that may read the jobs may read the holds (its TUI reads
-- them with the jobs), and every role that may delete jobs (an admin's) may write them, as the
-- lease holder must.
DO $$
DECLARE
    grantee TEXT;
    granted TEXT;
BEGIN
    FOR grantee, granted IN
        SELECT DISTINCT r.rolname, CASE a.privilege_type WHEN 'SELECT' THEN 'SELECT'
                                       ELSE 'SELECT, INSERT, UPDATE, DELETE' END
        FROM pg_class c, aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee
        WHERE c.oid = 'jobs'::regclass AND a.privilege_type IN ('SELECT', 'DELETE') LOOP
        EXECUTE format('GRANT %s ON mode_holds TO %I', granted, grantee);
    END LOOP;
END
$$
