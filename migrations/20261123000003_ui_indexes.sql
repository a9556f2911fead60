-- Indexes for the monitoring UI at millions of runs (measured by
-- `scheduler bench-ui`: 1,000,000 runs, 10,000,000 executions).

-- `/metrics`' step-duration histogram reads the executions that finished in
-- the last hour. Partial: a row enters it once, when its step ends, so the
-- claim and the lease renewals of running steps do not touch it.
CREATE INDEX executions_finished ON executions (finished_at) WHERE finished_at IS NOT NULL;

-- The runs page filtered by sequence and state (`runs_by_sequence` alone
-- reads and discards every run of the sequence in other states: thousands
-- of heap rows for a rare state, tens of ms deep in the keyset).
CREATE INDEX runs_by_sequence_state ON runs (sequence, state, created_at DESC, id DESC);
