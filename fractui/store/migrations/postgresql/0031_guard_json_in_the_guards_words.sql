-- 0030 read the text first as jsonb and caught only its syntax error: '["\u0000"]' (an escape
-- jsonb's text cannot hold, nor any reader's) failed a member's submit or audit entry in
-- PostgreSQL's words, "unsupported Unicode escape sequence", as before 0028; and a text whose
-- number jsonb cannot hold comes before its own syntax error ('[1e999999, ') was read again
-- as json outside any handler, failing in PostgreSQL's words where 0028 refused it; nor
-- did such a number with a \u0000 after it, which the number's walk failed on. All are
-- false again, so the guard refuses them in its own words.
CREATE OR REPLACE FUNCTION fractui_guard_json(t TEXT, kind TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    j JSONB;
BEGIN
    BEGIN
        j := t::jsonb;
    EXCEPTION WHEN invalid_text_representation OR untranslatable_character THEN
        RETURN false;
    WHEN numeric_value_out_of_range THEN  -- (the request's guard names the number)
        BEGIN  -- (nor \u0000 past the number, which the number's walk reads as text)
            RETURN coalesce(json_typeof(t::json) = kind, false)
                   AND t !~ '(^|[^\\])(\\\\)*\\u0000';
        EXCEPTION WHEN invalid_text_representation OR untranslatable_character THEN
            RETURN false;
        END;
    END;
    IF jsonb_path_exists(j, 'strict $.**{65}') THEN
        PERFORM fractui_guard_refuse(format(
            'write JSON nested deeper than 64 levels, which fractui''s readers do not read '
            '(%s)', left(t, 40)));
    END IF;
    RETURN coalesce(jsonb_typeof(j) = kind, false);
END
$$;

-- Nor did a member's argv or env holding a number numeric cannot hold ('[1e999999]') reach the
-- guard's words: the jobs' guard reads their values as jsonb, which failed in PostgreSQL's
-- ("value overflows numeric format"). Refused first, naming the number as 0028 does; the
-- trigger's name comes before the guard's, as PostgreSQL fires a table's triggers by name.
CREATE FUNCTION fractui_guard_job_json_numbers() RETURNS TRIGGER
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    bad TEXT;
BEGIN
    IF fractui_guard_admin() THEN
        RETURN NEW;
    END IF;
    IF fractui_guard_json(NEW.argv, 'array') THEN
        bad := 'argv: ' || fractui_guard_numeric_overflow(NEW.argv::json);
    END IF;
    IF bad IS NULL AND fractui_guard_json(NEW.env, 'object') THEN
        bad := 'env: ' || fractui_guard_numeric_overflow(NEW.env::json);
    END IF;
    IF bad IS NOT NULL THEN
        PERFORM fractui_guard_refuse(format('submit a job whose argv or env holds a number '
                                            'PostgreSQL''s numeric cannot hold (%s)', bad));
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER fractui_bound_json_numbers BEFORE INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION fractui_guard_job_json_numbers();
