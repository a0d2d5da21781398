-- A team member's requeue puts her job back to wait, as a submit does: it is held to her
-- team's bound on waiting jobs (0026) as her submit is, here as in fractui (sql._within_bound).
-- What waits is counted as fractui counts it: the pending jobs and those stopping to be
-- requeued, which the scheduler will put back (of several requeues asked for the last place,
-- one takes it). A member's ask (running -> stopping, to requeue) is counted in her team's
-- turn (0032), as her insert is; an admin's, and the scheduler's own requeues (a host lost, a
-- preemption), are not held.
CREATE OR REPLACE FUNCTION fractui_guard_waiting_bound() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    bound BIGINT;
    waiting BIGINT;
    requeued BIGINT;
    asked TEXT;
BEGIN
    IF fractui_guard_admin() OR NEW.team IS NULL THEN
        RETURN NEW;
    END IF;
    asked := CASE WHEN TG_OP = 'INSERT' THEN 'submit a job'
                  ELSE format('requeue job %s', NEW.id) END;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM fractui_guard_refuse(format('%s in a %s transaction: the jobs waiting are '
                                            'counted under read committed', asked,
                                            current_setting('transaction_isolation')));
    END IF;
    PERFORM fractui_team_turn(NEW.team);
    bound := coalesce((SELECT max_waiting FROM waiting_bounds WHERE team = NEW.team), 10000);
    SELECT count(*), count(stop_intent) INTO waiting, requeued FROM jobs
        WHERE team = NEW.team AND (state = 'pending'
                                   OR state = 'stopping' AND stop_intent = 'requeue');
    IF waiting >= bound THEN
        PERFORM fractui_guard_refuse(format('%s to team %s: it has %s job%s waiting%s and may '
                                            'have at most %s (max_waiting)', asked, NEW.team,
                                            waiting, CASE WHEN waiting = 1 THEN '' ELSE 's' END,
                                            CASE WHEN requeued = 0 THEN '' ELSE format(
                                                ' (%s of them being requeued)', requeued) END,
                                            bound));
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER fractui_guard_waiting_requeue BEFORE UPDATE ON jobs
    FOR EACH ROW WHEN (NEW.state = 'stopping' AND NEW.stop_intent = 'requeue'
                       AND OLD.state IS DISTINCT FROM 'stopping')
    EXECUTE FUNCTION fractui_guard_waiting_bound();
