-- A team member's statement that takes her team's turn may date its job when the statement
-- began (0039: psql's INSERT of statement_timestamp(), whose row's trigger takes the turn
-- after its values are read), but not before a job already submitted when it took the turn.
-- A statement may wait as long as it likes before its rows are written (a subquery that
-- sleeps or waits on a lock of her own, a DO block), holding no turn: on psql ann's INSERT
-- waited so while team nlp submitted to her queue, then wrote her job with the time the
-- statement began, and it went ahead of theirs, as 0039's open transaction had. Now such a
-- job is refused where a pending job of another transaction has a later time than it: for
-- psql's quick INSERT the span is the statement's parsing, and fractui dates its job after
-- the turn, never in that span. (Pending jobs only: those the scheduler still orders.)
--
-- And the guard reads the turn as the store's owner: 0039's read it as the member, and a
-- store whose teams were granted SELECT on every table before 0032 made team_turns (which
-- 0032 granted no one) refused each of her submits after the upgrade, "permission denied for
-- table team_turns". What it gives is the time this transaction took the team's turn, and
-- nothing of another's.
CREATE FUNCTION fractui_team_turn_taken(turn TEXT) RETURNS DOUBLE PRECISION
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT taken_at FROM team_turns WHERE team = turn AND taken_in = txid_current()
$$;
CREATE OR REPLACE FUNCTION fractui_guard_submit_time() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    taken DOUBLE PRECISION;
    later BIGINT;
BEGIN
    IF fractui_guard_admin() OR NEW.team IS NULL THEN
        RETURN NEW;
    END IF;
    taken := fractui_team_turn_taken(NEW.team);
    IF taken IS NULL OR NEW.submitted_at < least(
            taken, extract(epoch FROM statement_timestamp())::float8) THEN
        PERFORM fractui_guard_refuse(format('submit a job to team %s with a time before its '
                                            'turn to submit was taken: a job is submitted at '
                                            'the server''s now, in its team''s turn (on psql '
                                            'the INSERT''s statement_timestamp(), not now(), '
                                            'which is when the transaction began)', NEW.team));
    END IF;
    IF NEW.submitted_at < taken THEN  -- (dated before this statement took the turn)
        later := (SELECT min(j.id) FROM jobs j
                  WHERE j.state = 'pending' AND j.submitted_at > NEW.submitted_at
                    AND j.submitted_at <= taken
                    AND j.xmin::text <> (txid_current() % 4294967296)::text);
        IF later IS NOT NULL THEN
            PERFORM fractui_guard_refuse(format('submit a job to team %s with a time before '
                                                'job %s''s, submitted before this statement '
                                                'took the turn: a job is submitted at the '
                                                'server''s now, in its team''s turn (a '
                                                'statement that waits before it writes its '
                                                'rows is dated when it began)',
                                                NEW.team, later));
        END IF;
    END IF;
    RETURN NEW;
END
$$;
