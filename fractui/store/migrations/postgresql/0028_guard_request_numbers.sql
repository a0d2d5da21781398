-- A team member's request holding a number PostgreSQL's numeric cannot hold is refused in the
-- guard's words, as 0027 refuses any request no config gives. 0027 read each number as numeric
-- (and the request as jsonb, whose numbers are numeric): on psql '{"gpus": 1e200000}', a
-- number of over 131072 digits before its point or over 16383 after it (1e-20000) anywhere in
-- the request, was refused by PostgreSQL itself, "value overflows numeric format", which names
-- neither the guard nor the rule. Such a number is found on the request as json (text, whose
-- numbers are never read as numeric) before any is: the first one, by its path, is said. The
-- jobs' guard (0004, 0023) asks whether the request is a JSON object first: that is asked of
-- it as json too, so it is, and the request's own guard below says what is wrong with it.
CREATE OR REPLACE FUNCTION fractui_guard_json(t TEXT, kind TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    RETURN coalesce(json_typeof(t::json) = kind, false);
EXCEPTION WHEN invalid_text_representation THEN
    RETURN false;
END
$$;

CREATE FUNCTION fractui_guard_numeric_holds(number TEXT) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, public, pg_temp AS $$
    -- a JSON number's digits before and after its point, as its exponent moves them
    SELECT e IS NOT NULL AND length(m[1]) + e <= 131072
           AND coalesce(length(m[2]), 0) - e <= 16383
    FROM regexp_match(number, '^-?([0-9]+)(?:\.([0-9]+))?(?:[eE]([-+]?)0*([0-9]*))?$') m,
         LATERAL (SELECT CASE WHEN m[4] IS NULL OR m[4] = '' THEN 0
                              WHEN length(m[4]) <= 9 THEN (m[3] || m[4])::bigint END AS e) x
$$;

CREATE FUNCTION fractui_guard_numeric_overflow(request json) RETURNS TEXT
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, public, pg_temp AS $$
    -- the first number of ``request`` numeric cannot hold, as "PATH is NUMBER" (cut), or NULL
    WITH RECURSIVE walk(path, value) AS (
        SELECT ''::text, request
        UNION ALL
        SELECT CASE WHEN json_typeof(w.value) = 'object'
                    THEN w.path || CASE WHEN w.path = '' THEN '' ELSE '.' END || part.key
                    ELSE w.path || '[' || part.key || ']' END, part.value
        FROM walk w, LATERAL (
            SELECT o.key, o.value FROM json_each(
                CASE WHEN json_typeof(w.value) = 'object' THEN w.value END) o
            UNION ALL
            SELECT (a.n - 1)::text, a.value FROM json_array_elements(
                CASE WHEN json_typeof(w.value) = 'array' THEN w.value END)
                WITH ORDINALITY a(value, n)) part)
    SELECT format('%s is %s', path, left(value::text, 40)) FROM walk
    WHERE json_typeof(value) = 'number' AND NOT fractui_guard_numeric_holds(value::text)
    LIMIT 1
$$;

CREATE OR REPLACE FUNCTION fractui_guard_job_request() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    bad TEXT;
    forms INTEGER;
BEGIN
    IF fractui_guard_admin() THEN
        RETURN NEW;
    END IF;
    bad := fractui_guard_numeric_overflow(NEW.request::json);
    IF bad IS NULL THEN  -- (then each number is read as numeric, as 0027 reads them)
        SELECT string_agg(format('%s is %s', p.key, left(p.value::text, 40)), ', ')
        INTO bad FROM json_each(NEW.request::json) p, LATERAL (
            SELECT json_typeof(p.value) AS kind,
                   CASE WHEN json_typeof(p.value) = 'number' THEN p.value::text::numeric END
                   AS n) v
        WHERE NOT coalesce(CASE
            WHEN p.key IN ('gpus', 'priority') AND p.value::text !~ '^-?(0|[1-9][0-9]*)$'
                THEN false
            WHEN p.key = 'gpu' THEN v.n = 0 OR v.n BETWEEN 0.001 AND 0.999
            WHEN p.key IN ('memory_gib', 'gpus') THEN v.n BETWEEN 0 AND 1024
            WHEN p.key = 'cpus' THEN v.n BETWEEN 0 AND 4096
            WHEN p.key = 'memory' THEN v.n BETWEEN 0 AND 65536
            WHEN p.key = 'priority' THEN v.n BETWEEN -1000000 AND 1000000
            WHEN p.key = 'isolation' THEN v.kind = 'string' AND p.value #>> '{}' IN (
                'any', 'mig', 'share')
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
