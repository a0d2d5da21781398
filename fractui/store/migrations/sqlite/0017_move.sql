-- A job an admin moves by hand holds the slot it moves to while it stops (JSON: the slot as
-- Slot.record() writes it, and whether it is borrowed there); NULL for every other job.
ALTER TABLE jobs ADD COLUMN move_to TEXT;
