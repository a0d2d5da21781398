-- The guard tells this transaction's jobs by the transaction that last wrote each row, in 64
-- bits (written_in: txid_current(), the epoch and the number, as 0039's taken_in of a turn), no
-- longer by xmin, 32 bits of the number: a job left untouched 2^32 transactions (frozen by
-- VACUUM, its xmin kept) read as written by the transaction numbered so now. 0042 held an audit
-- entry's job to its time as well, but a time is its writer's: a job submitted as ann's and
-- dated a day ahead (by an admin on psql, or a server clock since set back) was still of her
-- entry "ann submit" once the numbers came round (seen). And 0041's submit check passed over a
-- pending job of this transaction's xmin, taking it for one of the statement's own: ann's slow
-- INSERT, begun before the time a job written 2^32 transactions before was dated ahead to and
-- ending after it, went ahead of it (seen). No time tells that job apart: its time lies in her
-- statement's span, which is what the check asks. A write in a subtransaction is its
-- transaction's now (txid_current() is the top transaction's), where 0040 refused it by the
-- subtransaction's own xmin: psql's ON_ERROR_ROLLBACK makes each statement one, and ann's
-- cancel there, then its entry, was refused (seen).
-- And by the time that transaction began as well as by its number: a number is the server's, and
-- another server numbers its own. A store an admin dumped (pg_dump) and restored on another server
-- keeps each job's written_in, the old server's numbers, which the new one, numbering from its own
-- start, comes to in turn: ann audited "ann submit" of a job submitted as hers before the restore,
-- in the new server's transaction of its old written_in (seen), as 0041's submit check would pass
-- over such a pending job as one of her statement's own. written_in_began is
-- transaction_timestamp() of the writing transaction, the server's clock when it began, stamped
-- with written_in; no server's transaction has both of one of another server's, or of one gone by.
ALTER TABLE jobs ADD COLUMN written_in BIGINT;
ALTER TABLE jobs ADD COLUMN written_in_began TIMESTAMPTZ;

-- A member writes no written_in of her own: a new job's is null as she sends it (0023's guard,
-- as it was but for this), and a change of it is refused as any column's not hers to change.
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
              "move_to": null, "written_in": null,
              "written_in_began": null}',
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

-- Whoever writes the row, after every guard has seen it as they sent it (named to sort last).
CREATE FUNCTION fractui_written_in() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    NEW.written_in := txid_current();
    NEW.written_in_began := transaction_timestamp();
    RETURN NEW;
END
$$;
CREATE TRIGGER fractui_written_in BEFORE INSERT OR UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION fractui_written_in();

-- 0041's, but for how a job of this transaction is told.
CREATE OR REPLACE FUNCTION fractui_guard_submit_time() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    taken DOUBLE PRECISION;
    later BIGINT;
BEGIN
    IF fractui_guard_admin() OR NEW.team IS NULL THEN
        RETURN NEW;
    END IF;
    taken := fractui_team_turn_taken(NEW.team);
    IF taken IS NULL OR NEW.submitted_at < least(
            taken, extract(epoch FROM statement_timestamp())::float8) THEN
        PERFORM fractui_guard_refuse(format('submit a job to team %s with a time before its '
                                            'turn to submit was taken: a job is submitted at '
                                            'the server''s now, in its team''s turn (on psql '
                                            'the INSERT''s statement_timestamp(), not now(), '
                                            'which is when the transaction began)', NEW.team));
    END IF;
    IF NEW.submitted_at < taken THEN  -- (dated before this statement took the turn)
        later := (SELECT min(j.id) FROM jobs j
                  WHERE j.state = 'pending' AND j.submitted_at > NEW.submitted_at
                    AND j.submitted_at <= taken
                    AND (j.written_in, j.written_in_began) IS DISTINCT FROM
                        (txid_current(), transaction_timestamp()));
        IF later IS NOT NULL THEN
            PERFORM fractui_guard_refuse(format('submit a job to team %s with a time before '
                                                'job %s''s, submitted before this statement '
                                                'took the turn: a job is submitted at the '
                                                'server''s now, in its team''s turn (a '
                                                'statement that waits before it writes its '
                                                'rows is dated when it began)',
                                                NEW.team, later));
        END IF;
    END IF;
    RETURN NEW;
END
$$;

-- 0042's, the job's time no longer asked: its written_in and written_in_began say it all.
CREATE OR REPLACE FUNCTION fractui_guard_audit_done() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF fractui_guard_admin() THEN
        RETURN NEW;
    END IF;
    IF NOT EXISTS (SELECT FROM jobs j
                   WHERE j.id = NEW.job
                     AND j.written_in = txid_current()
                     AND j.written_in_began = transaction_timestamp()
                     AND CASE NEW.action
                         WHEN 'submit' THEN j.state = 'pending' AND j.submitted_by = NEW.actor
                         WHEN 'cancel' THEN j.state = 'cancelled'
                                            OR j.state = 'stopping' AND j.stop_intent = 'cancel'
                         WHEN 'requeue' THEN j.state = 'stopping' AND j.stop_intent = 'requeue'
                         ELSE false END) THEN
        PERFORM fractui_guard_refuse(format('add an audit entry of %L about job %s, which this '
                                            'transaction has not done: an entry is of a change '
                                            'written before it, in the same transaction',
                                            NEW.action, NEW.job));
    END IF;
    RETURN NEW;
END
$$;
