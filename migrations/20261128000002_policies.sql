-- Run policies: steps routed to queues, and concurrency limits per sequence.

-- A run waits for a slot of its sequence's max_concurrent (`waiting`), or is
-- turned away by its policy (`skipped`, final). `note` says why, naming the
-- run that held the slot.
ALTER TABLE runs DROP CONSTRAINT runs_state_check;
ALTER TABLE runs ADD CONSTRAINT runs_state_check
    CHECK (state IN ('waiting', 'queued', 'running', 'succeeded', 'failed', 'canceled', 'skipped'));
ALTER TABLE runs ADD COLUMN note text;
-- The waiting runs of a sequence, first in first out.
CREATE INDEX runs_waiting ON runs (sequence, created_at, id) WHERE state = 'waiting';

-- The queue an execution's exec_module goes to (its step's, from the
-- snapshot); NULL on executions recorded before routing: the run's queue.
ALTER TABLE executions ADD COLUMN queue text;
