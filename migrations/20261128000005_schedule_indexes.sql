-- The runs of one schedule, newest first (`runs --schedule`, the UI's
-- filter), and the slot of a run: found by index when a slot is flagged
-- late and when a pruned run's slot lets go of it (ON DELETE SET NULL).
CREATE INDEX runs_by_schedule ON runs (schedule, created_at DESC, id DESC) WHERE schedule IS NOT NULL;
CREATE INDEX schedule_slots_by_run ON schedule_slots (run_id) WHERE run_id IS NOT NULL;
