-- A submit's key (SqlStore.submit): a retried submit whose first answer was lost (the
-- connection dropped while committing) finds the job the first one made, instead of making a
-- second. NULL for a job submitted without one; unique where given. A key is scoped by its
-- submitter as "<length of the role>:<role>:<key>", so one user's key never finds another's
-- job. And who submitted the job, as its audit entry names them (ROLE@where), so a job is
-- found by its user without the audit; a job of before takes its audit's submit entry.
-- The guard (0009's, as it was but for these) holds a team member's keys to their own role
-- and their submit to their own name (and a new job to no queued_at); a cancel or a stop
-- still changes none of them.
ALTER TABLE jobs ADD COLUMN submit_key TEXT;
CREATE UNIQUE INDEX jobs_submit_key ON jobs (submit_key);
ALTER TABLE jobs ADD COLUMN submitted_by TEXT;
-- When the job last began to wait: NULL since its submit, else the end of its last attempt
-- that started (a preemption, a requeue of a running job, a lost host), so its wait is shown
-- from there, not from a submit days before it ran; only the lease holder sets it.
ALTER TABLE jobs ADD COLUMN queued_at DOUBLE PRECISION;

CREATE OR REPLACE FUNCTION fractui_guard_jobs() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    free TEXT[];
    changed TEXT;
BEGIN
    IF fractui_guard_admin() THEN
        RETURN coalesce(NEW, OLD);  -- (NEW is null on a DELETE)
    END IF;
    IF TG_OP = 'DELETE' THEN
        PERFORM fractui_guard_refuse(format('delete job %s: a job is cancelled, not deleted',
                                            OLD.id));
    END IF;
    IF TG_OP = 'INSERT' THEN
        PERFORM fractui_guard_team(NEW.team, 'submit a job');
        changed := fractui_guard_changed(
            '{"state": "pending", "reason": null, "attempt": 0, "started_at": null,
              "ended_at": null, "host": null, "gpus": null, "profile": null, "start": null,
              "memory_mib": null, "charge": 0, "preemptible": 0, "manual": 0,
              "agent_job": null, "exit_code": null, "stop_intent": null,
              "layout_version": null, "refusals": "[]", "queued_at": null}',
            to_jsonb(NEW), ARRAY['id', 'queue', 'team', 'name', 'argv', 'cwd', 'request',
                                 'submitted_at', 'updated_at', 'env', 'image', 'submit_key',
                                 'submitted_by']);
        IF changed IS NOT NULL THEN
            PERFORM fractui_guard_refuse(format('submit a job with %s set: a new job is '
                                                'pending, with no slot', changed));
        END IF;
        IF NOT fractui_guard_json(NEW.argv, 'array')
                OR NOT fractui_guard_json(NEW.request, 'object')
                OR EXISTS (SELECT FROM jsonb_array_elements(NEW.argv::jsonb) a
                           WHERE jsonb_typeof(a) <> 'string') THEN
            PERFORM fractui_guard_refuse('submit a job whose argv is not a JSON list of '
                                         'strings or whose request is not a JSON object');
        END IF;
        IF NOT fractui_guard_json(NEW.env, 'object')
                OR EXISTS (SELECT FROM jsonb_each(NEW.env::jsonb) e
                           WHERE jsonb_typeof(e.value) <> 'string' OR e.key = ''
                                 OR strpos(e.key, '=') > 0)
                OR NEW.image = '' OR left(NEW.image, 1) = '-' THEN
            PERFORM fractui_guard_refuse('submit a job whose env is not a JSON object of '
                                         'strings named without ''='', or whose image is '
                                         'empty or begins with ''-''');
        END IF;
        IF NEW.submit_key IS NOT NULL AND left(NEW.submit_key, length(session_user) + 1
                + length(length(session_user)::text) + 1) IS DISTINCT FROM
                length(session_user)::text || ':' || session_user || ':' THEN
            PERFORM fractui_guard_refuse(format('submit a job with the key %L: a key is the '
                                                'length of its submitter''s role, :, the role, '
                                                ':, then its own words', NEW.submit_key));
        END IF;
        IF NEW.updated_at IS DISTINCT FROM NEW.submitted_at
                OR NOT fractui_guard_now(NEW.submitted_at) THEN
            PERFORM fractui_guard_refuse('submit a job with a time other than the server''s '
                                         'now');
        END IF;
        PERFORM fractui_guard_actor(NEW.submitted_by, 'submit a job');
        RETURN NEW;
    END IF;
    PERFORM fractui_guard_team(OLD.team, format('change job %s', OLD.id));
    IF OLD.state = 'pending' AND NEW.state = 'cancelled' THEN
        free := ARRAY['state', 'reason', 'exit_code', 'ended_at', 'updated_at'];
    ELSIF OLD.state IN ('placed', 'running') AND NEW.state = 'stopping'
            AND NEW.stop_intent IN ('cancel', 'requeue') THEN
        free := ARRAY['state', 'stop_intent', 'reason', 'updated_at'];
    ELSE
        PERFORM fractui_guard_refuse(format(
            'change job %s from %s to %s%s: a team member cancels a pending job, or asks the '
            'scheduler to stop a placed or running one (stopping, to cancel or requeue)',
            OLD.id, OLD.state, NEW.state,
            CASE WHEN NEW.state = 'stopping' THEN format(' (%s)', NEW.stop_intent) ELSE '' END));
    END IF;
    changed := fractui_guard_changed(to_jsonb(OLD), to_jsonb(NEW), free);
    IF changed IS NOT NULL THEN
        PERFORM fractui_guard_refuse(format('change %s of job %s', changed, OLD.id));
    END IF;
    IF NEW.exit_code IS NOT NULL OR NOT fractui_guard_now(NEW.updated_at)
            OR (NEW.state = 'cancelled' AND NOT fractui_guard_now(NEW.ended_at)) THEN
        PERFORM fractui_guard_refuse(format('set job %s''s exit code, or a time other than '
                                            'the server''s now', OLD.id));
    END IF;
    RETURN NEW;
END
$$;
-- Last: the rows' update queues the deferred audit check's events (0016), after which
-- PostgreSQL alters the table no more in this transaction.
-- A job of before takes its submitter from its audit entry, and when it last began to wait
-- from the end of its last attempt that started, as its usage records keep it.
UPDATE jobs SET submitted_by = (SELECT a.actor FROM audit a WHERE a.job = jobs.id
                                AND a.action = 'submit' ORDER BY a.id LIMIT 1),
                queued_at = (SELECT max(u.ended_at) FROM usage u WHERE u.job = jobs.id
                             AND u.attempt < jobs.attempt);
