-- Each role moves change counters of its own, so that no role's open transaction holds
-- another's announce. fractui_announce (0005), which every role may call, moved one row per
-- topic: a team member on psql who called it in a transaction left open held the jobs
-- counter's row, and every write of a job, every team's and the scheduler's, waited for it
-- and failed (RowsLocked, naming her) for as long as her session lived, as the advisory write
-- lock did before 0032. Now a topic's version is the sum of its rows, one per role that
-- announced it (session_user, as the guard's identity) and the one kept from before (role
-- ''); what she holds is her own row, which only her own sessions' writes wait for. Each row
-- only moves forward, so the sum moves with every committed change, as the one row did.
ALTER TABLE changes DROP CONSTRAINT changes_pkey;
ALTER TABLE changes ADD COLUMN role TEXT NOT NULL DEFAULT '';
ALTER TABLE changes ADD PRIMARY KEY (topic, role);

-- A counter only for a topic the store counts (a row of role ''); any other is only
-- notified, as before, and the feed drops what is not a topic.
CREATE OR REPLACE FUNCTION fractui_announce(topic TEXT) RETURNS VOID
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    INSERT INTO changes AS c (topic, role, version)
        SELECT k.topic, session_user, 1 FROM changes k
        WHERE k.topic = fractui_announce.topic AND k.role = ''
    ON CONFLICT ON CONSTRAINT changes_pkey DO UPDATE SET version = c.version + 1;
    PERFORM pg_notify('fractui_changes', topic);
END
$$;

-- A non-admin makes her own counter of a counted topic at 1, or moves her own forward by one,
-- as fractui_announce does, and nothing else (0024's rule, per role).
CREATE OR REPLACE FUNCTION fractui_guard_changes() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF fractui_guard_admin() THEN
        RETURN coalesce(NEW, OLD);  -- (NEW is null on a DELETE)
    END IF;
    IF TG_OP = 'INSERT' AND NEW.role = session_user::text AND NEW.version = 1
            AND EXISTS (SELECT FROM changes k WHERE k.topic = NEW.topic AND k.role = '') THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.role = session_user::text AND NEW.role = OLD.role
            AND NEW.topic = OLD.topic AND NEW.version = OLD.version + 1 THEN
        RETURN NEW;
    END IF;
    PERFORM fractui_guard_refuse(format('%s the change counter of %L other than by moving '
                                        'its own forward by one', lower(TG_OP),
                                        coalesce(OLD.topic, NEW.topic)));
    RETURN NULL;
END
$$;
