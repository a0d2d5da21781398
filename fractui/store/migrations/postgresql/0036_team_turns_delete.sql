-- An admin's DELETE of a team's turn (0032's team_turns, a team gone) deletes it. The guard's
-- row trigger returned NEW, which a DELETE has not: PostgreSQL read the null as "skip this
-- row", and the DELETE said 0 rows and kept the row, for an admin and the superuser alike.
-- What a non-admin may do is unchanged: take her own teams' turns, nothing else.
CREATE OR REPLACE FUNCTION fractui_guard_team_turns() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF NOT fractui_guard_admin() THEN
        IF TG_OP <> 'INSERT' THEN
            PERFORM fractui_guard_refuse(format('write table team_turns (%s): only an admin '
                                                'writes it', lower(TG_OP)));
        END IF;
        PERFORM fractui_guard_team(NEW.team, 'take the turn to submit');
    END IF;
    RETURN coalesce(NEW, OLD);  -- (NEW is null on a DELETE)
END
$$;
