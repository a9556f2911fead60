-- Mirrors PostgreSQL's `given_back`: an attempt its own worker gave back
-- unfinished (shutdown past the drain bound, or no free module slot in
-- time); recovery's `max_attempts` does not count it as lost.
ALTER TABLE executions ADD COLUMN given_back INTEGER NOT NULL DEFAULT 0 CHECK (given_back IN (0, 1));
