-- A team member locks no job but her teams': the UPDATE she is granted (on some columns of
-- jobs) also lets her SELECT ... FOR UPDATE, and on psql every job row, every team's, was
-- hers to hold for as long as her session lived; each write to another team's job (its
-- cancel, its placement, its end) then waited its turn and failed, pass after pass. Row
-- security on jobs: every role reads and submits as before (the guard holds a submit), and
-- the rows an UPDATE, or a SELECT ... FOR UPDATE/SHARE, reaches pass the policy below, which
-- refuses a member another team's row, or a row of no team, in the guard's own words (0004:
-- the guard's trigger then never sees such a row), so her lock statement fails whole and
-- holds nothing. The same for log_requests, whose two columns a member may update: a request
-- for the output of another team's job she may not lock either (0021's words). Admins and
-- the scheduler are not held; the tables' owner ran this.
-- The policies call functions of a fixed search_path (0011, 0021 say why).
CREATE FUNCTION fractui_guard_changes_job(team TEXT, id BIGINT) RETURNS BOOLEAN
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF NOT fractui_guard_admin() THEN
        PERFORM fractui_guard_team(team, format('change job %s', id));
    END IF;
    RETURN true;
END
$$;
ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY fractui_reads ON jobs FOR SELECT USING (true);
CREATE POLICY fractui_submits ON jobs FOR INSERT WITH CHECK (true);
CREATE POLICY fractui_deletes ON jobs FOR DELETE USING (true);
CREATE POLICY fractui_changes ON jobs FOR UPDATE
    USING (fractui_guard_changes_job(team, id)) WITH CHECK (true);

CREATE FUNCTION fractui_guard_asks_output(asked BIGINT) RETURNS BOOLEAN
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF NOT fractui_guard_admin() THEN
        PERFORM fractui_guard_team((SELECT team FROM jobs WHERE id = asked),
                                   format('ask for the output of job %s', asked));
    END IF;
    RETURN true;
END
$$;
ALTER TABLE log_requests ENABLE ROW LEVEL SECURITY;
CREATE POLICY fractui_reads ON log_requests FOR SELECT USING (true);
CREATE POLICY fractui_asks ON log_requests FOR INSERT WITH CHECK (true);
CREATE POLICY fractui_deletes ON log_requests FOR DELETE USING (true);
CREATE POLICY fractui_asks_again ON log_requests FOR UPDATE
    USING (fractui_guard_asks_output(job)) WITH CHECK (true);
