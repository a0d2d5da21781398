-- A team member's audit entry is of a change this transaction made (0040) by the job's time
-- too, not its xmin alone: xmin is 32 bits of a transaction's number, and a job left
-- untouched for 2^32 transactions since (frozen by VACUUM, its xmin kept) read as written by
-- this one, so ann could audit "ann submit" of a job submitted as hers long ago, or "ann
-- cancel" of one cancelled then. Every change a member makes to a job dates it the server's
-- now (the job guard's fractui_guard_now: updated_at no earlier than this transaction
-- began), and a job written that long ago is dated before it; an admin's write, dated by its
-- own clock, is of no member's entry either way.
CREATE OR REPLACE FUNCTION fractui_guard_audit_done() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF fractui_guard_admin() THEN
        RETURN NEW;
    END IF;
    IF NOT EXISTS (SELECT FROM jobs j
                   WHERE j.id = NEW.job
                     AND j.xmin::text = (txid_current() % 4294967296)::text
                     AND j.updated_at >= extract(epoch FROM transaction_timestamp())::float8
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
