-- A team member's cancel or stop says who asked for it, as fractui writes it: "cancelled by
-- ROLE" (a pending job's cancel, or a stop to cancel) or "requeued by ROLE" (a stop to requeue),
-- ROLE alone or ROLE@<where>, as the audit's actor (0004). 0004 let them write any reason: on
-- psql ann set her job stopping "cancelled by ops@head", wrote no audit entry, and the lease
-- holder's own `end` entry and `jobs` then named ops as the one who cancelled it. A trigger of
-- its own, as 0006's: 0004's (fired first, by name) has refused every other change already.
CREATE FUNCTION fractui_guard_job_reason() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    said TEXT := CASE WHEN NEW.stop_intent = 'requeue' THEN 'requeued by '
                      ELSE 'cancelled by ' END;
BEGIN
    IF fractui_guard_admin() THEN
        RETURN NEW;
    END IF;
    IF left(NEW.reason, length(said)) IS DISTINCT FROM said THEN
        PERFORM fractui_guard_refuse(format('give job %s the reason %L: it is %L followed by '
                                            'who asked', OLD.id, NEW.reason, said));
    END IF;
    PERFORM fractui_guard_actor(substr(NEW.reason, length(said) + 1),
                                format('give job %s the reason %L', OLD.id, NEW.reason));
    RETURN NEW;
END
$$;
CREATE TRIGGER fractui_guard_reason BEFORE UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION fractui_guard_job_reason();
