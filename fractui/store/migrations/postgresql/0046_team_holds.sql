-- What each team holds for one of its waiting jobs, as the lease holder's last pass decided it
-- (sched.queueing's Hold, config reserve_after_s): the job, the quota it holds (GPUs, as a
-- slot charges) and, where it found no room, the host its team's later jobs keep off. Written
-- whole when it changes; `fractui teams` and the TUI's queue panel show it, so an admin who
-- sees a team's quota partly idle, or a host its later jobs skip, can tell why.
CREATE TABLE team_holds (
    team   TEXT NOT NULL PRIMARY KEY,
    job    BIGINT NOT NULL,
    charge DOUBLE PRECISION NOT NULL,
    host   TEXT
);

-- The lease holder's record: the guard (0004) holds everyone else off the table.
CREATE TRIGGER fractui_guard BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON team_holds
    FOR EACH STATEMENT EXECUTE FUNCTION fractui_guard_admins_only();

-- Every role that may read the jobs may read the holds (`fractui teams` and the TUI show
-- them beside the teams' standing); every role that may delete jobs (an admin's) may write
-- them, as the lease holder must.
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
        EXECUTE format('GRANT %s ON team_holds TO %I', granted, grantee);
    END LOOP;
END
$$
