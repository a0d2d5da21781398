-- 0028 read every text the guard asks "is this JSON of that kind" (argv, request, env, an
-- audit entry's detail) as json, not jsonb, so that a request's number numeric cannot hold
-- reached the request's own guard. json takes text jsonb refuses ('["\ud800"]', a lone
-- surrogate, which no reader's text holds): a member's audit entry whose detail was only
-- asked that was kept, and argv's or env's failed the submit in PostgreSQL's words, where
-- before 0028 each was refused in the guard's. jsonb is read again first; only a number it
-- cannot hold sends the question to json, as 0028 meant.
-- Nor was JSON held to a depth: a member's request (under a key fractui does not read) or
-- audit detail nested a thousand deep was kept, and Python's JSON reader fails on it (its
-- recursion), so every read of the jobs, the scheduler's pass first, failed until an admin
-- removed the row. fractui writes JSON two deep; a value more than 64 levels down is
-- refused, in the guard's words (every caller asks this of a member's row only: an admin's
-- is not held). IMMUTABLE, as 0004 made it: the guards' conditions are folded with its
-- answer, before the jsonb cast later in the same condition would fail in PostgreSQL's words.
CREATE OR REPLACE FUNCTION fractui_guard_json(t TEXT, kind TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    j JSONB;
BEGIN
    BEGIN
        j := t::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
        RETURN false;
    WHEN numeric_value_out_of_range THEN  -- (the request's guard names the number)
        RETURN coalesce(json_typeof(t::json) = kind, false);
    END;
    IF jsonb_path_exists(j, 'strict $.**{65}') THEN
        PERFORM fractui_guard_refuse(format(
            'write JSON nested deeper than 64 levels, which fractui''s readers do not read '
            '(%s)', left(t, 40)));
    END IF;
    RETURN coalesce(jsonb_typeof(j) = kind, false);
END
$$;

-- 0028 walked every value of every member's request, a few microseconds each: a request of
-- a million small arrays (4 MiB, 0025's bound) took its statement many seconds where jsonb
-- reads it in a fraction of one. The walk is for the one request jsonb cannot read for a
-- number: it is made only then.
ALTER FUNCTION fractui_guard_numeric_overflow(json) RENAME TO fractui_guard_numeric_walk;
CREATE FUNCTION fractui_guard_numeric_overflow(request json) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    PERFORM request::text::jsonb;
    RETURN NULL;
EXCEPTION WHEN numeric_value_out_of_range THEN
    RETURN fractui_guard_numeric_walk(request);
END
$$;

-- Nor is an audit entry's detail holding such a number (fractui writes none) kept: 0028's
-- json took it, where PostgreSQL had refused it, and fractui's reads of the audit then said
-- the store damaged, quoting the whole detail. Refused, naming the number as 0028 does.
CREATE FUNCTION fractui_guard_audit_detail() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    bad TEXT;
BEGIN
    IF NOT fractui_guard_admin() AND NEW.detail IS NOT NULL THEN
        bad := fractui_guard_numeric_overflow(NEW.detail::json);
        IF bad IS NOT NULL THEN
            PERFORM fractui_guard_refuse(format('add an audit entry whose detail holds a '
                                                'number PostgreSQL''s numeric cannot hold (%s)',
                                                bad));
        END IF;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER fractui_guard_audit_detail BEFORE INSERT ON audit
    FOR EACH ROW EXECUTE FUNCTION fractui_guard_audit_detail();

-- 0029's UPDATE policies asked each row whether the statement's role is an admin: an admin's
-- or the scheduler's update of many jobs called the policy's function on every row. Asked
-- once per statement (a subquery PostgreSQL runs once), a member's row still goes to the
-- function, which refuses another team's.
ALTER POLICY fractui_changes ON jobs
    USING ((SELECT fractui_guard_admin()) OR fractui_guard_changes_job(team, id));
ALTER POLICY fractui_asks_again ON log_requests
    USING ((SELECT fractui_guard_admin()) OR fractui_guard_asks_output(job));
