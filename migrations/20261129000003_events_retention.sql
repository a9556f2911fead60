-- Retention deletes alert events (with their deliveries and attempts, by
-- cascade) older than its bound once every delivery is final: a keyset
-- range scan of this index from the oldest, as `runs_newest` is for runs.
-- Events keep no foreign key to their run (an event outlives its run's
-- pruning, and a pending one is delivered after it).
CREATE INDEX events_at ON events (at, id);
