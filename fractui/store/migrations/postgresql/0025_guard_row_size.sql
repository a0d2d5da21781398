-- A team member's row is at most 4 MiB as text. 0004 held a row to fractui's shape, not its
-- size: on psql a member wrote a job or an audit entry of near 1 GB (PostgreSQL's most for one
-- value; 256 MiB a value where the guard reads it as JSON), which every reader of the jobs or
-- the audit then read whole — the scheduler at each pass, each user's jobs and TUI at each
-- change. fractui's own submit writes about 1 MiB at most: the command and its variables as
-- JSON are at most 960 KiB, what a host's agent takes in one request line (a larger job could
-- never start), and the name, cwd and image 4096 characters each; the audit entry's detail
-- holds the same. The trigger's name sorts before the guard's others, so the size is said
-- first. An admin's row is not measured (the scheduler's writes are the most).
CREATE FUNCTION fractui_guard_size() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    size BIGINT;
BEGIN
    IF fractui_guard_admin() THEN
        RETURN NEW;
    END IF;
    size := octet_length(NEW::text);
    IF size > 4194304 THEN
        PERFORM fractui_guard_refuse(format('write a row of %s bytes to %s: at most 4 MiB (a '
                                            'job''s command and variables are at most 960 KiB, '
                                            'what a host takes)', size, TG_TABLE_NAME));
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER fractui_bound_size BEFORE INSERT OR UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION fractui_guard_size();
CREATE TRIGGER fractui_bound_size BEFORE INSERT OR UPDATE ON audit
    FOR EACH ROW EXECUTE FUNCTION fractui_guard_size();
CREATE TRIGGER fractui_bound_size BEFORE INSERT OR UPDATE ON log_requests
    FOR EACH ROW EXECUTE FUNCTION fractui_guard_size();
