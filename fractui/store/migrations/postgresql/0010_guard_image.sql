-- A team member's submit on psql is held to the agent's whole rule for a job's image
-- (remote_agent/jobs/runtime/image.py), not only to 0009's empty and leading '-': at most 4096
-- characters, and none that Python's str.isspace or str.isprintable would refuse. Those are,
-- of the characters Unicode assigns, exactly the categories Cc, Cf, Co, Zs, Zl and Zp; the
-- class below lists them as Unicode 14 has them (tests/test_pg_guard.py checks it against the
-- agent's rule). A code point Unicode 14 leaves unassigned (or that an agent's older Python
-- does not know) passes here and is refused by the agent at launch, with its reason. A trigger of its own, as 0006's: the image never changes
-- after the submit (0009's rule), so a check on INSERT is the whole of it.
CREATE FUNCTION fractui_guard_job_image() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF fractui_guard_admin() OR NEW.image IS NULL THEN
        RETURN NEW;
    END IF;
    IF length(NEW.image) > 4096 OR NEW.image ~ ('[' ||
        '\u0001-\u0020\u007f-\u00a0\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891' ||
        '\u08e2\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u2064\u2066-\u206f\u3000' ||
        '\ue000-\uf8ff\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U00013438' ||
        '\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f' ||
        '\U000f0000-\U000ffffd\U00100000-\U0010fffd' || ']') THEN
        PERFORM fractui_guard_refuse('submit a job whose image is longer than 4096 '
                                     'characters or holds a space or a control character');
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER fractui_guard_image BEFORE INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION fractui_guard_job_image();
