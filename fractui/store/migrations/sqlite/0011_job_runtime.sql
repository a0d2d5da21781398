-- What a job runs in (issue 17): the variables it adds to its environment (a JSON object of
-- strings, '{}' for none) and the container image it runs in (NULL: a bare process), both
-- given at submit and kept across its attempts. Jobs of before run as they did: no variables,
-- no image.
ALTER TABLE jobs ADD COLUMN env TEXT NOT NULL DEFAULT '{}';
ALTER TABLE jobs ADD COLUMN image TEXT
