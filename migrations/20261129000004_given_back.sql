-- An attempt its own worker gave back unfinished (`abandoned` written by
-- the worker, not by recovery): stopped at a shutdown past the drain bound,
-- or handed back because the worker had no free module slot in time. Such
-- an attempt is not a lost worker, so recovery's `max_attempts` (attempts
-- lost to a dead or unreachable worker) does not count it.
ALTER TABLE executions ADD COLUMN given_back boolean NOT NULL DEFAULT false;
