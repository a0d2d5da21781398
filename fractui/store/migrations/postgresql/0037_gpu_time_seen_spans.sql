-- Each stretch of its bucket a GPU was seen (a JSON list of [from, to] pairs, in order), so a
-- range in a gap within the bucket (a host away, a paused holder) counts none of its time:
-- spread from its first look to its last (seen_from, seen_to), a GPU seen, gone for a while
-- and seen again read as online while it was away. NULL for a bucket kept before: spread from
-- seen_from to seen_to, as it was.
-- (The guard's trigger and the admins' grants on gpu_time are the table's: they hold the new
-- column too.)
ALTER TABLE gpu_time ADD COLUMN seen_spans TEXT;
