-- The store's write lock is a lock only the roles that must hold it may take. It was an
-- advisory lock (pg_advisory_xact_lock), and PostgreSQL guards advisory locks with no
-- privilege: a team member on psql took it and held it, in a transaction left open, and
-- every other team's writes and the scheduler's waited for it and failed, 30 s each. Now an
-- admin's write (the scheduler's, a TUI's, a verb's) locks the table write_lock in EXCLUSIVE
-- mode, which PostgreSQL lets only a role with UPDATE, DELETE or TRUNCATE on it take; the
-- admins are given UPDATE below, the teams nothing (SELECT, which the docs' grant on every
-- table gives them, takes ACCESS SHARE only, which EXCLUSIVE does not wait for). A team
-- member's write takes no lock every team waits for: her cancel or stop locks the job's row
-- (her team's, 0029), her submit her team's turn (fractui_team_turn, below), so what she can
-- hold on psql stalls her own team's writes alone.
CREATE TABLE write_lock ();

CREATE TRIGGER fractui_guard BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON write_lock
    FOR EACH STATEMENT EXECUTE FUNCTION fractui_guard_admins_only();

-- Takes the write lock where the role may (true), else takes nothing (false): a team
-- member's write. An admin that may not is refused, saying what to grant: an admin's writes
-- are not held by the guard, so each must hold the lock.
CREATE FUNCTION fractui_write_turn() RETURNS BOOLEAN
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF has_table_privilege('public.write_lock', 'UPDATE') THEN
        LOCK TABLE public.write_lock IN EXCLUSIVE MODE;
        RETURN true;
    END IF;
    IF fractui_guard_admin() THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = format(
            'role %s is an admin but may not take the store''s write lock (UPDATE on table '
            'write_lock): the store''s owner runs GRANT UPDATE ON write_lock TO fractui_admin',
            current_user);
    END IF;
    RETURN false;
END
$$;

-- One row per team that has submitted, whose row lock is that team's turn to submit: its
-- waiting jobs are counted under it (0026's bound), so of two submits for the last place the
-- second counts the first's job, as under the write lock. A member takes her own teams' turns
-- only (the guard's words otherwise), so one who holds hers stalls her team's submits alone.
CREATE TABLE team_turns (
    team TEXT NOT NULL PRIMARY KEY
);

CREATE FUNCTION fractui_guard_team_turns() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF NOT fractui_guard_admin() THEN
        IF TG_OP <> 'INSERT' THEN
            PERFORM fractui_guard_refuse(format('write table team_turns (%s): only an admin '
                                                'writes it', lower(TG_OP)));
        END IF;
        PERFORM fractui_guard_team(NEW.team, 'take the turn to submit');
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER fractui_guard BEFORE INSERT OR UPDATE OR DELETE ON team_turns
    FOR EACH ROW EXECUTE FUNCTION fractui_guard_team_turns();
CREATE TRIGGER fractui_guard_truncate BEFORE TRUNCATE ON team_turns
    FOR EACH STATEMENT EXECUTE FUNCTION fractui_guard_admins_only();

-- As the store's owner, for a member who has no privilege on team_turns; the guard above
-- (by session_user) holds her to her own teams.
CREATE FUNCTION fractui_team_turn(turn TEXT) RETURNS VOID
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    INSERT INTO team_turns (team) VALUES (turn) ON CONFLICT (team) DO NOTHING;
    PERFORM 1 FROM team_turns WHERE team = turn FOR UPDATE;
END
$$;

-- 0026's bound, counted under the team's turn where it took the advisory lock.
CREATE OR REPLACE FUNCTION fractui_guard_waiting_bound() RETURNS TRIGGER
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
    PERFORM fractui_team_turn(NEW.team);
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

-- The admins (the roles that may delete jobs) may take the write lock; nobody else.
DO $$
DECLARE
    grantee TEXT;
BEGIN
    FOR grantee IN
        SELECT DISTINCT r.rolname
        FROM pg_class c, aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee
        WHERE c.oid = 'jobs'::regclass AND a.privilege_type = 'DELETE' LOOP
        EXECUTE format('GRANT SELECT, UPDATE ON write_lock TO %I', grantee);
    END LOOP;
END
$$
