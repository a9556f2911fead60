-- A started slot whose run has not started some time after its fire time
-- (every worker busy or down) is flagged late, once.
ALTER TABLE schedule_slots ADD COLUMN late_at timestamptz;
