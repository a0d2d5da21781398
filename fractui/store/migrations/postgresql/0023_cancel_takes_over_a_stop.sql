-- A cancel takes over a stop under way that would bring the job back (a requeue, a
-- preemption, an admin's move: model.stops_offered): the job stays stopping, its intent now
-- cancel, a move's held slot let go (move_to NULL), so it ends cancelled, never back in its
-- queue. A team member's cancel of her job stopping so is let through the guard (0022's, as
-- it was but for this); the reason and audit triggers (0015, 0016) hold it to "cancelled by"
-- her and an audit entry of the cancel, as any member's cancel.
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
              "layout_version": null, "refusals": "[]", "queued_at": null,
              "move_to": null}',
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
    ELSIF OLD.state = 'stopping' AND OLD.stop_intent IN ('requeue', 'preempt', 'move')
            AND NEW.state = 'stopping' AND NEW.stop_intent = 'cancel' THEN
        free := ARRAY['stop_intent', 'reason', 'updated_at', 'move_to'];
        IF NEW.move_to IS NOT NULL THEN
            PERFORM fractui_guard_refuse(format('cancel job %s keeping the slot its move '
                                                'held', OLD.id));
        END IF;
    ELSE
        PERFORM fractui_guard_refuse(format(
            'change job %s from %s%s to %s%s: a team member cancels a pending job, asks the '
            'scheduler to stop a placed or running one (stopping, to cancel or requeue), or '
            'turns a stop that would bring it back (a requeue, a preemption, a move) into a '
            'cancel', OLD.id, OLD.state,
            CASE WHEN OLD.state = 'stopping' THEN format(' (%s)', OLD.stop_intent) ELSE '' END,
            NEW.state,
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
