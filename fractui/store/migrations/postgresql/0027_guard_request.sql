-- A team member's new job asks for what a queue of a config fractui reads could ask for
-- (QueueConfig.request, config.BOUNDS), each key of the kind the store's readers take
-- (sql.REQUEST_KEYS). 0004 held the request to a JSON object only: on psql a member submitted
-- '{"gpus": "x"}', and every read of the jobs (the scheduler's at each pass, each user's
-- `jobs` and TUI) said the store damaged until an admin removed the row, so no team's job
-- was placed; '{"cpus": 1e400}' is read as Python's infinity, which the pass's request_of
-- cannot round; a MIG profile with isolation "share" failed every pass (the placer raises);
-- and a share of -1 GPU, or 0.5 of one and 8 whole ones, asks for what no config gives. A
-- request of none of gpu, mig, memory_gib and gpus is let through, read as before (an older
-- fractui's; a config always gives one). Each pair of the text is read, a key given twice
-- too (the readers keep the last). A number's kind is its text's: an integer has no '.' or
-- exponent, as Python's json reads one. An admin's job is not held (the scheduler's, a
-- move's). A trigger of its own, as 0010's: the request never changes after the submit
-- (0009's rule), so a check on INSERT is the whole of it.
CREATE FUNCTION fractui_guard_job_request() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    bad TEXT;
    forms INTEGER;
BEGIN
    IF fractui_guard_admin() THEN
        RETURN NEW;
    END IF;
    SELECT string_agg(format('%s is %s', p.key, left(p.value::text, 40)), ', ')
    INTO bad FROM json_each(NEW.request::json) p, LATERAL (
        SELECT json_typeof(p.value) AS kind,
               CASE WHEN json_typeof(p.value) = 'number' THEN p.value::text::numeric END AS n) v
    WHERE NOT coalesce(CASE
        WHEN p.key IN ('gpus', 'priority') AND p.value::text !~ '^-?(0|[1-9][0-9]*)$' THEN false
        WHEN p.key = 'gpu' THEN v.n = 0 OR v.n BETWEEN 0.001 AND 0.999
        WHEN p.key IN ('memory_gib', 'gpus') THEN v.n BETWEEN 0 AND 1024
        WHEN p.key = 'cpus' THEN v.n BETWEEN 0 AND 4096
        WHEN p.key = 'memory' THEN v.n BETWEEN 0 AND 65536
        WHEN p.key = 'priority' THEN v.n BETWEEN -1000000 AND 1000000
        WHEN p.key = 'isolation' THEN v.kind = 'string' AND p.value #>> '{}' IN ('any', 'mig',
                                                                                 'share')
        WHEN p.key IN ('mig', 'team', 'image') THEN v.kind IN ('string', 'null')
        WHEN p.key IN ('hosts', 'gpu_models') THEN v.kind = 'array' AND (
            SELECT count(*) <= 10000 AND coalesce(bool_and(json_typeof(e) = 'string'), true)
            FROM json_array_elements(CASE WHEN v.kind = 'array' THEN p.value END) e)
        ELSE true END, false);
    SELECT count(*) INTO forms FROM jsonb_each(NEW.request::jsonb) p
    WHERE (p.key IN ('gpu', 'memory_gib', 'gpus') AND p.value <> '0')
       OR (p.key = 'mig' AND p.value NOT IN ('null', '""'));
    IF bad IS NULL AND NEW.request::jsonb ->> 'isolation' = 'share'
            AND coalesce(NEW.request::jsonb ->> 'mig', '') <> '' THEN
        bad := 'mig with isolation share';  -- (the pass's placer raised on it: every pass)
    ELSIF bad IS NULL AND NEW.request::jsonb ->> 'isolation' = 'mig'
            AND (NEW.request::jsonb ->> 'gpus')::numeric > 1 THEN
        bad := 'gpus above 1 with isolation mig';
    END IF;
    IF bad IS NOT NULL OR forms > 1 THEN
        PERFORM fractui_guard_refuse(format(
            'submit a job whose request is not a queue''s portion as fractui writes it (%s): '
            'at most one of gpu (0.001 to 0.999), mig, memory_gib (up to 1024), gpus (a whole '
            'number, up to 1024), and cpus, memory, priority, isolation, hosts and gpu_models '
            'within a config''s bounds', coalesce(bad, format('%s of gpu, mig, memory_gib, '
                                                             'gpus asked', forms))));
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER fractui_guard_request BEFORE INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION fractui_guard_job_request();
