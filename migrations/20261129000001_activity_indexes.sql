-- Indexes for what `/metrics` computes at scrape time over the last hour
-- (runs ended, retries queued) and over the whole slot ledger (slots that
-- started no run), so a scrape reads the recent rows, never the history
-- (measured by `scheduler bench-ui`: 1,000,000 runs, 10,000,000
-- executions). Built once here without CONCURRENTLY (a migration runs in a
-- transaction): a few seconds of blocked writes on a table of millions.

-- Runs that ended in the last hour, by sequence and state.
CREATE INDEX runs_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;

-- Retry attempts queued in the last hour. Partial: retries are a small
-- share of the executions, and a first attempt never enters it.
CREATE INDEX executions_retries ON executions (queued_at) WHERE retry > 0;

-- Every missed and skipped slot of each schedule: the ledger is never
-- pruned, so these counts only grow (Prometheus counters); both fates are
-- rare, so this stays small however many slots started runs.
CREATE INDEX schedule_slots_not_run ON schedule_slots (schedule, fate) WHERE fate IN ('missed', 'skipped');
