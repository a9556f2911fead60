-- Retries of failed steps. An execution that retries a failure carries its
-- retry number (attempts that replace one lost to a dead worker keep it, so
-- the two are counted apart) and, while it waits, the time it is due: it is
-- published by recovery then, so a delay survives any restart.
ALTER TABLE executions
    ADD COLUMN retry  integer NOT NULL DEFAULT 0 CHECK (retry >= 0),
    ADD COLUMN due_at timestamptz;
