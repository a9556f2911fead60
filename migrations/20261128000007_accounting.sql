-- Process accounting of each execution, from the kernel when the module is
-- reaped (its waited-for children included), and the wall time to the
-- microsecond; the output contract (what the step's declared output was
-- when the module exited 0) and warnings that do not fail the step (an
-- input missing when it started); a step that went silent.
ALTER TABLE executions
    ADD COLUMN wall_us       bigint,
    ADD COLUMN peak_rss_kib  bigint,
    ADD COLUMN user_cpu_us   bigint,
    ADD COLUMN sys_cpu_us    bigint,
    ADD COLUMN output_path   text,
    ADD COLUMN output_bytes  bigint,
    ADD COLUMN output_mtime  timestamptz,
    ADD COLUMN output_sha256 text,
    ADD COLUMN warnings      text[],
    ADD COLUMN stalled_at    timestamptz;
