-- The launches hosts refused for a job (JSON list of {host, words, at, kind}), oldest first:
-- they count its attempts against [scheduler] max_attempts and keep the agents' words.
ALTER TABLE jobs ADD COLUMN refusals TEXT NOT NULL DEFAULT '[]';
