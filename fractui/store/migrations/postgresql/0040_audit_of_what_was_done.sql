-- A team member's audit entry is of a change she made to its job in the same transaction, as
-- fractui writes one (the job's row, then its entry): the job written by this transaction and
-- left as the action leaves it (a submit pending, a cancel cancelled or stopping to be
-- cancelled, a requeue stopping to be requeued), a submit's by her. 0004 held an entry to her
-- name, her team's job and the actions a member's are, and 0016 made each of her changes
-- audited, but not each entry a change: on psql ann wrote "ann cancel job 7" of her
-- teammate's job, still pending and never touched, and "ann submit job 9" of one bob had
-- submitted, and the audit said both. The row's xmin is the transaction that wrote it (its
-- low 32 bits of txid_current(); a write in a subtransaction, which fractui never makes, is
-- not this transaction's and is refused).
CREATE FUNCTION fractui_guard_audit_done() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF fractui_guard_admin() THEN
        RETURN NEW;
    END IF;
    IF NOT EXISTS (SELECT FROM jobs j
                   WHERE j.id = NEW.job
                     AND j.xmin::text = (txid_current() % 4294967296)::text
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
-- (named to sort after the other guards of an entry, whose refusals come first)
CREATE TRIGGER fractui_guard_was_done BEFORE INSERT ON audit
    FOR EACH ROW EXECUTE FUNCTION fractui_guard_audit_done();
