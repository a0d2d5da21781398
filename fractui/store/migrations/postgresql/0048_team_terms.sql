-- Each team's quota, whether it borrows past it and its weight, as the lease holder's config
-- gives them ([[teams]]): what its passes hold the team to. Written when the lease is taken
-- and when they change; `fractui teams` shows them, not the reader's config's, which may be
-- an old copy of the admin's.
CREATE TABLE team_terms (
    team       TEXT NOT NULL PRIMARY KEY,
    quota_gpus DOUBLE PRECISION NOT NULL,
    over_quota BOOLEAN NOT NULL,
    weight     DOUBLE PRECISION NOT NULL
);

-- The lease holder's record: the guard (0004) holds everyone else off the table.
CREATE TRIGGER fractui_guard BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON team_terms
    FOR EACH STATEMENT EXECUTE FUNCTION fractui_guard_admins_only();

-- Every role that may read the jobs may read the terms (`fractui teams` shows them); every
-- role that may delete jobs (an admin's) may write them, as the lease holder must.
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
        EXECUTE format('GRANT %s ON team_terms TO %I', granted, grantee);
    END LOOP;
END
$$
