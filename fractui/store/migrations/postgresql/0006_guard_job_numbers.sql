-- A team member's new job takes the number the store gives it: an id of their own choosing
-- (INSERT ... (id, ...) on psql) could take one the store gives later, and every submit that
-- drew it would fail. The identity's own number is the one its sequence gave this session
-- last (currval: session-local); none given yet means the id was chosen. SECURITY DEFINER
-- because currval needs a privilege on the sequence that a team's role is not granted; the
-- identity is still session_user (fractui_guard_admin).
CREATE FUNCTION fractui_guard_job_number() RETURNS TRIGGER
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF fractui_guard_admin() THEN
        RETURN NEW;
    END IF;
    BEGIN
        IF NEW.id = currval(pg_get_serial_sequence('jobs', 'id')) THEN
            RETURN NEW;
        END IF;
    EXCEPTION WHEN object_not_in_prerequisite_state THEN
        NULL;  -- the sequence gave this session no number: the id was chosen
    END;
    PERFORM fractui_guard_refuse(format('submit a job numbered %s: the store numbers jobs',
                                        NEW.id));
    RETURN NULL;
END
$$;
CREATE TRIGGER fractui_guard_number BEFORE INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION fractui_guard_job_number();
