-- When in its bucket a GPU's time was seen (the first counted moment and the last), so a range
-- that cuts a bucket counts the part of the GPU's time that was in it: spread over the whole
-- bucket, a GPU gone before the range began read as online in it, and one come after it began
-- as online for less than it was. NULL for a bucket kept before: spread over it, as it was.
ALTER TABLE gpu_time ADD COLUMN seen_from REAL;
ALTER TABLE gpu_time ADD COLUMN seen_to REAL;
