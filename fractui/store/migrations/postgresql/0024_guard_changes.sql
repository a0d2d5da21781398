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
