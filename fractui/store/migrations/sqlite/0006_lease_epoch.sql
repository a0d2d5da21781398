-- The scheduler lease's fencing epoch: a new one each time the lease changes hands; a write
-- the scheduler makes as lease holder carries its epoch, refused once the lease's is another.
-- A released lease keeps its row (holder '') so the epoch never goes back. A lease held while
-- this migration runs is epoch 1, the first.
ALTER TABLE lease ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
UPDATE lease SET epoch = 1
