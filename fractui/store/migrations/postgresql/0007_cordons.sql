-- Hosts and GPUs an admin took out of service: ``cordon`` (no new work) or ``drain`` (no new
-- work, said "drained" once nothing is left on it). ``gpu`` -1: the whole host.
CREATE TABLE cordons (
    host  TEXT NOT NULL,
    gpu   INTEGER NOT NULL,
    mode  TEXT NOT NULL,
    actor TEXT NOT NULL,
    why   TEXT NOT NULL,
    since DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (host, gpu)
);

-- A cordon is an admin's act: the guard (0004) holds everyone else off the table, as it does
-- the lease and the inventory.
CREATE TRIGGER fractui_guard BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON cordons
    FOR EACH STATEMENT EXECUTE FUNCTION fractui_guard_admins_only();

-- Every role that may read the jobs (the least GRANTs' team roles, granted before this table
-- was made) may read the cordons too, so its TUI and `fractui status` show them.
DO $$
DECLARE
    reader TEXT;
BEGIN
    FOR reader IN SELECT DISTINCT r.rolname FROM pg_class c, aclexplode(c.relacl) a
                  JOIN pg_roles r ON r.oid = a.grantee
                  WHERE c.oid = 'jobs'::regclass AND a.privilege_type = 'SELECT' LOOP
        EXECUTE format('GRANT SELECT ON cordons TO %I', reader);
    END LOOP;
END
$$
