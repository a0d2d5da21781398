-- What fails the lease holder's scheduling passes, while they fail (NULL: they go fine), so an
-- admin sees it in the TUI's header and `fractui jobs`, not only in the holder's log: a pass
-- that fails places nothing, and every job reads as waiting for room. Cleared by the next
-- pass that goes through and when the lease changes hands.
ALTER TABLE lease ADD COLUMN trouble TEXT
