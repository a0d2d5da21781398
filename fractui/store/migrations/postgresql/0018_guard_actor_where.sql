-- The actor a team member writes: their own role, alone or @ where they asked from, and that
-- where holds no @ (a host name, " (tui)"). A user is the actor before its last @
-- (fractui.store.model.submitter, and jobs --user's filter), so 0004's rule, which let the
-- where hold anything, let role ann write 'ann@corp@head': the role ann@corp's, as jobs, the
-- TUI's user column, the usage records and the audit read it (submitted_by, 0017).
CREATE OR REPLACE FUNCTION fractui_guard_actor(actor TEXT, what TEXT) RETURNS VOID
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF actor IS DISTINCT FROM session_user::text
            AND (left(actor, length(session_user) + 1) IS DISTINCT FROM session_user || '@'
                 OR strpos(substr(actor, length(session_user::text) + 2), '@') > 0) THEN
        PERFORM fractui_guard_refuse(format('%s as %L: the actor must be %s or %s@<where>, '
                                            'the where holding no @', what, actor,
                                            session_user, session_user));
    END IF;
END
$$;
