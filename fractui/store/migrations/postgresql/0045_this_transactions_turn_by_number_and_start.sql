-- A turn is this transaction's by the time it began as well as by its number (0039's
-- taken_in), as a job is (0043): a store restored on another server (pg_dump) keeps each
-- turn's taken_in, the old server's number, which the new one comes to in turn, and in its
-- transaction of that number fractui_team_turn took the turn without its time, so the turn
-- read as taken before the restore: ann began that transaction, left it open while team nlp
-- submitted, then inserted her job with the time it began, and it went ahead of theirs
-- (seen), as 0039's open transaction had. taken_began is transaction_timestamp() of the
-- transaction that took the turn, written with taken_in.
ALTER TABLE team_turns ADD COLUMN taken_began TIMESTAMPTZ;

-- 0039's, but for how a turn of this transaction is told.
CREATE OR REPLACE FUNCTION fractui_team_turn(turn TEXT) RETURNS VOID
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    INSERT INTO team_turns (team) VALUES (turn) ON CONFLICT (team) DO NOTHING;
    PERFORM 1 FROM team_turns WHERE team = turn FOR UPDATE;
    -- (read after the lock, which a teammate's turn may have kept it waiting for)
    UPDATE team_turns SET taken_at = extract(epoch FROM clock_timestamp())::float8,
                          taken_in = txid_current(), taken_began = transaction_timestamp()
        WHERE team = turn AND (taken_in, taken_began) IS DISTINCT FROM
                              (txid_current(), transaction_timestamp());
END
$$;

-- 0039's, but for the new column: a member writes it only as fractui_team_turn does.
CREATE OR REPLACE FUNCTION fractui_guard_team_turns() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF NOT fractui_guard_admin() THEN
        IF TG_OP = 'DELETE' OR TG_OP = 'UPDATE' AND NEW.team IS DISTINCT FROM OLD.team THEN
            PERFORM fractui_guard_refuse(format('write table team_turns (%s): only an admin '
                                                'writes it', lower(TG_OP)));
        END IF;
        PERFORM fractui_guard_team(NEW.team, 'take the turn to submit');
        IF (NEW.taken_at IS NOT NULL OR NEW.taken_in IS NOT NULL
                OR NEW.taken_began IS NOT NULL)
                AND ((NEW.taken_in, NEW.taken_began) IS DISTINCT FROM
                     (txid_current(), transaction_timestamp())
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

-- 0041's, but for how a turn of this transaction is told.
CREATE OR REPLACE FUNCTION fractui_team_turn_taken(turn TEXT) RETURNS DOUBLE PRECISION
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT taken_at FROM team_turns
    WHERE team = turn AND taken_in = txid_current() AND taken_began = transaction_timestamp()
$$;
