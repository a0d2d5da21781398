-- A team member's change of a job is audited in the same transaction, as fractui's own submit,
-- cancel and stop are (SqlStore writes the job's row, then its audit entry). 0004 held each
-- row to fractui's shape, but on psql ann could set her job stopping and write no audit entry
-- at all. Checked at commit (a deferred constraint trigger: the entry comes after the row):
-- an entry about that job, of the action the change is, by the writer, written since the
-- transaction began. SET CONSTRAINTS ... IMMEDIATE only makes it stricter; only the table's
-- owner could drop it.
CREATE FUNCTION fractui_guard_job_audited() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    done TEXT := CASE WHEN TG_OP = 'INSERT' THEN 'submit'
                      WHEN NEW.state = 'stopping' THEN NEW.stop_intent
                      ELSE 'cancel' END;
BEGIN
    IF fractui_guard_admin() THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT FROM audit a
                   WHERE a.job = NEW.id AND a.action = done
                     AND a.time >= extract(epoch FROM transaction_timestamp())::float8
                     AND (a.actor = session_user::text
                          OR left(a.actor, length(session_user) + 1) = session_user || '@'))
    THEN
        PERFORM fractui_guard_refuse(format(
            '%s job %s without an audit entry of it (%L, about job %s, as %s) in the same '
            'transaction', CASE WHEN TG_OP = 'INSERT' THEN 'submit' ELSE 'change' END,
            NEW.id, done, NEW.id, session_user));
    END IF;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER fractui_guard_audited AFTER INSERT OR UPDATE ON jobs
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION fractui_guard_job_audited();
