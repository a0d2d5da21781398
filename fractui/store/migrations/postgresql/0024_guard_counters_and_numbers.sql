-- The change counters (0005) are guarded as every other table: 0004's guard was made before
-- the table was, and no trigger held it since. Where an admin granted the teams every
-- privilege on every table (the earlier advice, or GRANT ALL), a team member could set a
-- counter back, so a reader that held it took a change for none, or delete or truncate the
-- counters, and every scheduler stopped on "no change counter" until an admin put them back.
-- A non-admin moves a counter forward by one, as fractui_announce does (it runs as its
-- owner, but session_user, which the guard reads, stays the member's), and nothing else.
CREATE FUNCTION fractui_guard_changes() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF fractui_guard_admin() THEN
        RETURN coalesce(NEW, OLD);  -- (NEW is null on a DELETE)
    END IF;
    IF TG_OP <> 'UPDATE' OR NEW.topic IS DISTINCT FROM OLD.topic
            OR NEW.version IS DISTINCT FROM OLD.version + 1 THEN
        PERFORM fractui_guard_refuse(format('%s the change counter of %L other than by '
                                            'moving it forward by one', lower(TG_OP),
                                            coalesce(OLD.topic, NEW.topic)));
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER fractui_guard BEFORE INSERT OR UPDATE OR DELETE ON changes
    FOR EACH ROW EXECUTE FUNCTION fractui_guard_changes();
CREATE TRIGGER fractui_guard_truncate BEFORE TRUNCATE ON changes
    FOR EACH STATEMENT EXECUTE FUNCTION fractui_guard_admins_only();

-- A team member's audit entry takes the number the store gives it, as a job does (0006): an
-- id of their own choosing, ahead of the sequence, was drawn later by a write of the store's
-- and failed it (a scheduler's pass, another team's submit), once per number chosen, and
-- placed the entry after the events that came after it in the audit's order. 0006's check,
-- made one for both tables: what is numbered and by what name are the trigger's arguments.
CREATE FUNCTION fractui_guard_number() RETURNS TRIGGER
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF fractui_guard_admin() THEN
        RETURN NEW;
    END IF;
    BEGIN
        IF NEW.id = currval(pg_get_serial_sequence(TG_TABLE_NAME, 'id')) THEN
            RETURN NEW;
        END IF;
    EXCEPTION WHEN object_not_in_prerequisite_state THEN
        NULL;  -- the sequence gave this session no number: the id was chosen
    END;
    PERFORM fractui_guard_refuse(format('%s numbered %s: the store numbers %s', TG_ARGV[0],
                                        NEW.id, TG_ARGV[1]));
    RETURN NULL;
END
$$;
DROP TRIGGER fractui_guard_number ON jobs;
DROP FUNCTION fractui_guard_job_number();
CREATE TRIGGER fractui_guard_number BEFORE INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION fractui_guard_number('submit a job', 'jobs');
CREATE TRIGGER fractui_guard_number BEFORE INSERT ON audit
    FOR EACH ROW EXECUTE FUNCTION fractui_guard_number('add an audit entry', 'audit entries');
