-- A job's kept output is read by its team and the admins, not by every role that reads the
-- jobs: a job's output is what it made (a printed token, a sample of its data), not what the
-- fleet needs shown to say why a job waits (docs/decisions.md). Row security on log_tails:
-- an admin (or the scheduler, as one) reads and writes every row, a team member reads the
-- rows of their teams' jobs; the table's owner is not held (it ran this migration). And the
-- guard of log_requests (0004's, as it was but for this) refuses a member's ask for the
-- output of a job not of their teams, as fractui's rule does.
-- The policies call functions of a fixed search_path (0011 says why): a policy's own SQL runs
-- with the reader's, where a TEMP TABLE jobs of theirs would come first.
CREATE FUNCTION fractui_guard_reads_output(job BIGINT) RETURNS BOOLEAN
LANGUAGE sql STABLE SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT fractui_guard_admin() OR EXISTS (
        SELECT FROM jobs j WHERE j.id = job AND j.team IS NOT NULL
                             AND fractui_guard_member('fractui_team_' || j.team))
$$;
ALTER TABLE log_tails ENABLE ROW LEVEL SECURITY;
CREATE POLICY fractui_admins ON log_tails
    USING (fractui_guard_admin()) WITH CHECK (fractui_guard_admin());
CREATE POLICY fractui_team_reads ON log_tails FOR SELECT
    USING (fractui_guard_reads_output(job));

CREATE OR REPLACE FUNCTION fractui_guard_log_requests() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    changed TEXT;
BEGIN
    IF fractui_guard_admin() THEN
        RETURN coalesce(NEW, OLD);  -- (NEW is null on a DELETE)
    END IF;
    IF TG_OP = 'DELETE' THEN
        PERFORM fractui_guard_refuse(format('delete the request for job %s''s output: the '
                                            'scheduler does', OLD.job));
    END IF;
    PERFORM fractui_guard_actor(NEW.actor, format('ask for job %s''s output', NEW.job));
    IF TG_OP = 'UPDATE' THEN
        changed := fractui_guard_changed(to_jsonb(OLD), to_jsonb(NEW),
                                         ARRAY['actor', 'asked_at']);
        IF changed IS NOT NULL THEN
            PERFORM fractui_guard_refuse(format('change %s of the request for job %s''s '
                                                'output', changed, OLD.job));
        END IF;
    END IF;
    IF NOT EXISTS (SELECT FROM jobs WHERE id = NEW.job)
            OR NOT fractui_guard_now(NEW.asked_at) THEN
        PERFORM fractui_guard_refuse(format('ask for the output of job %s, which is not in the '
                                            'store, or at a time other than the server''s now',
                                            NEW.job));
    END IF;
    PERFORM fractui_guard_team((SELECT team FROM jobs WHERE id = NEW.job),
                               format('ask for the output of job %s', NEW.job));
    RETURN NEW;
END
$$;
