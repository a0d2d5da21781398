-- A manual placement previewed on a MIG GPU carries the layout version its plan was made
-- against; the agent refuses the launch if the GPU changed since.
ALTER TABLE jobs ADD COLUMN layout_version TEXT;
