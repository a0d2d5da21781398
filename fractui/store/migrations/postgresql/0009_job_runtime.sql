-- What a job runs in (issue 17): the variables it adds to its environment (a JSON object of
-- strings, '{}' for none) and the container image it runs in (NULL: a bare process), both
-- given at submit and kept across its attempts. Jobs of before run as they did: no variables,
-- no image.
ALTER TABLE jobs ADD COLUMN env TEXT NOT NULL DEFAULT '{}';
ALTER TABLE jobs ADD COLUMN image TEXT;

-- The guard (0004) as it was, but that a team member's submit may now set both, each of the
-- shape fractui writes (a variable's name is never empty and holds no '='; an image is never
-- empty nor read as an option of the runtime's command). A cancel or a stop still changes
-- neither: the guard's update rule compares every column but its own few. The table's
-- GRANTs are on the table, so the least grants cover the new columns with no new line.
CREATE OR REPLACE FUNCTION fractui_guard_jobs() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
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
              "layout_version": null, "refusals": "[]"}',
            to_jsonb(NEW), ARRAY['id', 'queue', 'team', 'name', 'argv', 'cwd', 'request',
                                 'submitted_at', 'updated_at', 'env', 'image']);
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
        IF NEW.updated_at IS DISTINCT FROM NEW.submitted_at
                OR NOT fractui_guard_now(NEW.submitted_at) THEN
            PERFORM fractui_guard_refuse('submit a job with a time other than the server''s '
                                         'now');
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
