-- Every function of fractui's searches pg_catalog, then the store's schema, then the caller's
-- temporary tables last. A function made with SET search_path FROM CURRENT still searched a
-- session's temporary tables first, before pg_catalog (PostgreSQL does so for relations
-- unless the path names pg_temp), and the guard runs as its caller: a team member's
-- TEMP TABLE pg_roles said they were a superuser, and the guard let them change any job.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = current_schema()::regnamespace
               AND p.proname LIKE 'fractui\_%'
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp', f,
                       current_schema());
    END LOOP;
END
$$;
