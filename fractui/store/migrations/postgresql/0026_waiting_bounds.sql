-- How many pending jobs each team may have waiting (the config's [[teams]] max_waiting), as
-- the lease holder last wrote them. The scheduler reads every pending job at each pass, so a
-- member's script submitting in a loop — through fractui, or inserting on psql — would slow
-- every team's placement and every reader's `jobs`: a team member's insert past her team's
-- bound is refused here, in the database, whatever client made it. A team not listed is held
-- to 10000, config.DEFAULT_MAX_WAITING. An admin's insert (the scheduler's, a move's) is not
-- held, and lowering a bound changes nothing already waiting.
CREATE TABLE waiting_bounds (
    team        TEXT NOT NULL PRIMARY KEY,
    max_waiting BIGINT NOT NULL
);

-- What each submit counts: one team's pending jobs, read by the index, not by a walk of every
-- team's.
CREATE INDEX jobs_team_state ON jobs (team, state);

-- The lease holder's record: the guard (0004) holds everyone else off the table.
CREATE TRIGGER fractui_guard BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON waiting_bounds
    FOR EACH STATEMENT EXECUTE FUNCTION fractui_guard_admins_only();

-- Counted under the store's write lock (postgres.WRITE_LOCK, which every fractui write takes
-- first), in a snapshot taken after it: of two submits for the last place, the second counts
-- the first's job. A transaction whose snapshot was taken before the lock (repeatable read,
-- serializable) could miss a job committed meanwhile, so a member submits under read
-- committed, fractui's own. The count sees the rows this statement and transaction inserted
-- before (the function is volatile): one INSERT of many rows is held too. The trigger's name
-- sorts after fractui_guard's, so a role of another team is told that first.
CREATE FUNCTION fractui_guard_waiting_bound() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    bound BIGINT;
    waiting BIGINT;
BEGIN
    IF fractui_guard_admin() OR NEW.team IS NULL THEN
        RETURN NEW;
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM fractui_guard_refuse(format('submit a job in a %s transaction: the jobs '
                                            'waiting are counted under read committed',
                                            current_setting('transaction_isolation')));
    END IF;
    PERFORM pg_advisory_xact_lock(1718772067);  -- postgres.WRITE_LOCK
    bound := coalesce((SELECT max_waiting FROM waiting_bounds WHERE team = NEW.team), 10000);
    SELECT count(*) INTO waiting FROM jobs WHERE state = 'pending' AND team = NEW.team;
    IF waiting >= bound THEN
        PERFORM fractui_guard_refuse(format('submit a job to team %s: it has %s job%s '
                                            'waiting and may have at most %s (max_waiting)',
                                            NEW.team, waiting,
                                            CASE WHEN waiting = 1 THEN '' ELSE 's' END, bound));
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER fractui_guard_waiting BEFORE INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION fractui_guard_waiting_bound();

-- Every role that may read the jobs may read the bounds (the guard reads them as the member,
-- and `fractui teams` shows them); every role that may delete jobs (an admin's) may write
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
        EXECUTE format('GRANT %s ON waiting_bounds TO %I', granted, grantee);
    END LOOP;
END
$$
