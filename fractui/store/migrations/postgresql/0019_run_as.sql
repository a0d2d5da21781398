-- The host user a job runs as: NULL, the agent's own (an admin's submit: an admin may launch
-- on the hosts anyway), else the name of the team member who submitted it, so a member's
-- submit never runs their code with the agent's rights (root where it is). The guard (0017's,
-- as it was but for this) holds a member's new job to their own role, whoever writes the row
-- (a psql INSERT too); a cancel or a stop still changes no run_as.
ALTER TABLE jobs ADD COLUMN run_as TEXT;

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
                                 'submitted_by', 'run_as']);
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
        IF NEW.run_as IS DISTINCT FROM session_user::text THEN
            PERFORM fractui_guard_refuse(format('submit a job run on the hosts as %s: a team '
                                                'member''s job runs as %s',
                                                coalesce(NEW.run_as, 'the agent''s user'),
                                                session_user));
        END IF;
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
-- Last (0017 says why). A member's job not ended from before runs as the member from now on:
-- its submitter's role, unless that role is an admin's; a role dropped since is no admin's. A
-- job placed, running or stopping too, not only one pending: each goes back to its queue with
-- run_as as it is (a requeue, a preemption, a lost host), so left NULL it would run as the
-- agent at every later attempt, and a member may requeue her own job. An attempt on its host
-- already is found there by its key before any launch is sent again (the pass reflects it);
-- only a launch of before that has not run there (in flight, or cut short before it ran)
-- meets the next one with run_as: the agent refuses that key's launch with other params, and
-- the job fails, never runs as the agent again.
UPDATE jobs SET run_as = regexp_replace(jobs.submitted_by, '@[^@]*$', '')
WHERE jobs.state IN ('pending', 'placed', 'running', 'stopping') AND jobs.run_as IS NULL
  AND jobs.submitted_by IS NOT NULL
  AND NOT EXISTS (SELECT FROM pg_roles r
                  WHERE r.rolname = regexp_replace(jobs.submitted_by, '@[^@]*$', '')
                    AND (r.rolsuper OR EXISTS (SELECT FROM pg_roles a
                                               WHERE a.rolname = 'fractui_admin'
                                                 AND pg_has_role(r.oid, a.oid, 'MEMBER'))));
