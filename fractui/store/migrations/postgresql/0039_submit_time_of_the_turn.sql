-- A team member's job is submitted no earlier than her team's turn was taken for it. The
-- scheduler places a queue's pending jobs oldest first (submitted_at), and the guard held a
-- member's time to the server's clock between her transaction's start and now (0004): on psql
-- ann began a transaction, left it open a day holding nothing, then submitted with the time
-- it began, and her job went ahead of every other team's submitted that day. fractui takes
-- the turn (0032's row of team_turns) and then reads the clock for the job's time; the turn
-- now says when it was taken, and in which transaction (written by fractui_team_turn, as the
-- store's owner, the first time a transaction takes it), and a member's submit written with
-- a time before that is refused, or before its statement began where the statement took the
-- turn (an INSERT on psql of clock_timestamp(), whose trigger takes it). What she may still do is take her turn and hold it, which
-- stalls her own team's submits for as long (0032 says so), or hold her insert uncommitted.
ALTER TABLE team_turns ADD COLUMN taken_at DOUBLE PRECISION, ADD COLUMN taken_in BIGINT;

CREATE OR REPLACE FUNCTION fractui_team_turn(turn TEXT) RETURNS VOID
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    INSERT INTO team_turns (team) VALUES (turn) ON CONFLICT (team) DO NOTHING;
    PERFORM 1 FROM team_turns WHERE team = turn FOR UPDATE;
    -- (read after the lock, which a teammate's turn may have kept it waiting for)
    UPDATE team_turns SET taken_at = extract(epoch FROM clock_timestamp())::float8,
                          taken_in = txid_current()
        WHERE team = turn AND taken_in IS DISTINCT FROM txid_current();
END
$$;

-- A non-admin takes her own teams' turns, at the server's now in her own transaction, and
-- writes nothing else of the table (0036's rule, and the time the turn was taken).
CREATE OR REPLACE FUNCTION fractui_guard_team_turns() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF NOT fractui_guard_admin() THEN
        IF TG_OP = 'DELETE' OR TG_OP = 'UPDATE' AND NEW.team IS DISTINCT FROM OLD.team THEN
            PERFORM fractui_guard_refuse(format('write table team_turns (%s): only an admin '
                                                'writes it', lower(TG_OP)));
        END IF;
        PERFORM fractui_guard_team(NEW.team, 'take the turn to submit');
        IF (NEW.taken_at IS NOT NULL OR NEW.taken_in IS NOT NULL)
                AND (NEW.taken_in IS DISTINCT FROM txid_current()
                     OR NOT coalesce(NEW.taken_at BETWEEN
                                     extract(epoch FROM statement_timestamp())::float8
                                     AND extract(epoch FROM clock_timestamp())::float8, false)) THEN
            PERFORM fractui_guard_refuse(format('take the turn to submit of team %s at a time '
                                                'other than the server''s now, or for another '
                                                'transaction', NEW.team));
        END IF;
    END IF;
    RETURN coalesce(NEW, OLD);  -- (NEW is null on a DELETE)
END
$$;

CREATE FUNCTION fractui_guard_submit_time() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    taken DOUBLE PRECISION;
BEGIN
    IF fractui_guard_admin() OR NEW.team IS NULL THEN
        RETURN NEW;
    END IF;
    taken := (SELECT taken_at FROM team_turns
              WHERE team = NEW.team AND taken_in = txid_current());
    IF taken IS NULL OR NEW.submitted_at < least(
            taken, extract(epoch FROM statement_timestamp())::float8) THEN
        PERFORM fractui_guard_refuse(format('submit a job to team %s with a time before its '
                                            'turn to submit was taken: a job is submitted at '
                                            'the server''s now, in its team''s turn',
                                            NEW.team));
    END IF;
    RETURN NEW;
END
$$;
-- (named to sort after fractui_guard_waiting, whose fractui_team_turn takes the turn)
CREATE TRIGGER fractui_guard_when BEFORE INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION fractui_guard_submit_time();
