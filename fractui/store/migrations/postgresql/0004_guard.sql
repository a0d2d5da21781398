-- The guard: the database itself holds a role that is neither a superuser nor a member of
-- fractui_admin to what fractui's rule (fractui.store.access) lets a team member do through
-- fractui, so a user who connects with psql as their own role can do no more than fractui
-- lets them. session_user is the identity, as the store's: SET ROLE does not change it.
-- A refusal is SQLSTATE 42501 (insufficient_privilege), which the store says as StoreDenied.
-- Every check compares the whole row (to_jsonb), so a column added to a table later is one a
-- team member may not set until a migration here says they may.
CREATE FUNCTION fractui_guard_member(role TEXT) RETURNS BOOLEAN
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT coalesce((SELECT pg_has_role(session_user, r.oid, 'MEMBER') FROM pg_roles r
                     WHERE r.rolname::text = role), false)
$$;

CREATE FUNCTION fractui_guard_admin() RETURNS BOOLEAN
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = session_user), false)
        OR fractui_guard_member('fractui_admin')
$$;

CREATE FUNCTION fractui_guard_refuse(what TEXT) RETURNS VOID
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = format(
        'refused by the store''s guard: role %s (not in fractui_admin) may not %s',
        session_user, what);
END
$$;

-- A time fractui writes is the server's clock read inside the writing transaction.
CREATE FUNCTION fractui_guard_now(t DOUBLE PRECISION) RETURNS BOOLEAN
LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    SELECT coalesce(t BETWEEN extract(epoch FROM transaction_timestamp())::float8
                          AND extract(epoch FROM clock_timestamp())::float8, false)
$$;

-- Whether text is JSON of that type (so no reader finds a row fractui never wrote).
CREATE FUNCTION fractui_guard_json(t TEXT, kind TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql IMMUTABLE SET search_path FROM CURRENT AS $$
BEGIN
    RETURN coalesce(jsonb_typeof(t::jsonb) = kind, false);
EXCEPTION WHEN invalid_text_representation THEN
    RETURN false;
END
$$;

-- The columns of ``now`` (but ``free``) that differ from ``was``, or NULL.
CREATE FUNCTION fractui_guard_changed(was JSONB, now JSONB, free TEXT[]) RETURNS TEXT
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT string_agg(n.key, ', ' ORDER BY n.key) FROM jsonb_each(now - free) n
    WHERE n.value IS DISTINCT FROM was -> n.key
$$;

CREATE FUNCTION fractui_guard_team(team TEXT, what TEXT) RETURNS VOID
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF team IS NULL THEN
        PERFORM fractui_guard_refuse(what || ' of no team: that is an admin''s');
    ELSIF NOT fractui_guard_member('fractui_team_' || team) THEN
        PERFORM fractui_guard_refuse(format('%s of team %s: it is not a member of '
                                            'fractui_team_%s', what, team, team));
    END IF;
END
$$;

-- The actor a team member writes: their own role, alone or @ where they asked from.
CREATE FUNCTION fractui_guard_actor(actor TEXT, what TEXT) RETURNS VOID
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF actor IS DISTINCT FROM session_user::text
            AND left(actor, length(session_user) + 1) IS DISTINCT FROM session_user || '@' THEN
        PERFORM fractui_guard_refuse(format('%s as %L: the actor must be %s or %s@<where>',
                                            what, actor, session_user, session_user));
    END IF;
END
$$;

-- jobs: submit (a new pending job of one's team), cancel of a pending job, and a stop asked
-- of a placed or running one (to cancel or requeue), each with only the columns
-- SqlStore.submit, ended and stopping set; never a delete.
CREATE FUNCTION fractui_guard_jobs() RETURNS TRIGGER
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
                                 'submitted_at', 'updated_at']);
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

-- audit: only added to, by fractui's team actions, naming its writer, about a job of a team
-- the writer is in.
CREATE FUNCTION fractui_guard_audit() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF fractui_guard_admin() THEN
        RETURN coalesce(NEW, OLD);  -- (NEW is null on a DELETE)
    END IF;
    IF TG_OP <> 'INSERT' THEN
        PERFORM fractui_guard_refuse(format('%s audit entry %s: the audit is only added to',
                                            lower(TG_OP), OLD.id));
    END IF;
    PERFORM fractui_guard_actor(NEW.actor, 'add an audit entry');
    IF NEW.action IS NULL OR NEW.action NOT IN ('submit', 'cancel', 'requeue') THEN
        PERFORM fractui_guard_refuse(format('add an audit entry of %L: a team member''s are '
                                            'submit, cancel and requeue', NEW.action));
    END IF;
    PERFORM fractui_guard_team((SELECT team FROM jobs WHERE id = NEW.job),
                               format('add an audit entry about job %s', NEW.job));
    IF NOT fractui_guard_now(NEW.time)
            OR (NEW.detail IS NOT NULL AND NOT fractui_guard_json(NEW.detail, 'object')) THEN
        PERFORM fractui_guard_refuse('add an audit entry with a time other than the '
                                     'server''s now, or a detail that is not a JSON object');
    END IF;
    RETURN NEW;
END
$$;

-- log_requests: asked (or asked again) by the asker, as `fractui logs` does; the lease holder
-- removes them.
CREATE FUNCTION fractui_guard_log_requests() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
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
    RETURN NEW;
END
$$;

-- Every other table is the admin's and the scheduler's alone, and no one else truncates any.
CREATE FUNCTION fractui_guard_admins_only() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF NOT fractui_guard_admin() THEN
        PERFORM fractui_guard_refuse(format('write table %s (%s): only an admin (or the '
                                            'scheduler, as one) writes it', TG_TABLE_NAME,
                                            lower(TG_OP)));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER fractui_guard BEFORE INSERT OR UPDATE OR DELETE ON jobs
    FOR EACH ROW EXECUTE FUNCTION fractui_guard_jobs();
CREATE TRIGGER fractui_guard BEFORE INSERT OR UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION fractui_guard_audit();
CREATE TRIGGER fractui_guard BEFORE INSERT OR UPDATE OR DELETE ON log_requests
    FOR EACH ROW EXECUTE FUNCTION fractui_guard_log_requests();
-- The tables a row trigger above guards may not be truncated by a non-admin; every other
-- table is the admin's alone.
DO $$
DECLARE
    name TEXT;
BEGIN
    FOREACH name IN ARRAY ARRAY['jobs', 'audit', 'log_requests'] LOOP
        EXECUTE format('CREATE TRIGGER fractui_guard_truncate BEFORE TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION fractui_guard_admins_only()', name);
    END LOOP;
    FOREACH name IN ARRAY ARRAY['lease', 'inventory', 'stale', 'log_tails', 'lost_clocks',
                                'stops_sent', 'meta', 'fractui_schema'] LOOP
        EXECUTE format('CREATE TRIGGER fractui_guard BEFORE INSERT OR UPDATE OR DELETE OR '
                       'TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION '
                       'fractui_guard_admins_only()', name);
    END LOOP;
END
$$
