-- Every byte a module writes, in order, readable from any host while it
-- runs and after its worker is gone. A row is a stretch of one stream read
-- together (a line, or a burst of lines), stamped with when it was read;
-- `pos` is its byte offset in the execution's whole output (both streams,
-- in the order they were read), so a reader resumes after the last `pos`
-- it saw, and a gap between two rows is output omitted by the cap (the
-- head and the tail of a flood are kept, the middle counted).
CREATE TABLE execution_logs (
    run_id   uuid        NOT NULL,
    step     integer     NOT NULL,
    attempt  integer     NOT NULL,
    pos      bigint      NOT NULL CHECK (pos >= 0),
    stream   text        NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    at       timestamptz NOT NULL,
    data     bytea       NOT NULL,
    PRIMARY KEY (run_id, step, attempt, pos),
    FOREIGN KEY (run_id, step, attempt) REFERENCES executions ON DELETE CASCADE
);

-- Set when the whole log has been written: every byte the module wrote, and
-- how many of them the cap left out.
ALTER TABLE executions ADD COLUMN log_bytes bigint, ADD COLUMN log_omitted bigint;
