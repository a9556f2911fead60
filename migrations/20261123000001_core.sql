-- The record of truth: every run, every execution of every step, every worker.

CREATE TABLE runs (
    id            uuid PRIMARY KEY,              -- UUIDv7: time-ordered
    sequence      text        NOT NULL,
    state         text        NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
    queue         text        NOT NULL,          -- broker queue its messages go to
    trigger       text        NOT NULL,          -- who or what started it: "cli:alice@host", "cron", "ui"
    snapshot      jsonb       NOT NULL,          -- the sequence and resolved commands it runs
    step_count    integer     NOT NULL CHECK (step_count > 0),
    failed_step   integer,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    published_at  timestamptz,                   -- start_etl confirmed by the broker (outbox marker)
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runs_newest ON runs (created_at DESC, id DESC);
CREATE INDEX runs_by_sequence ON runs (sequence, created_at DESC, id DESC);
CREATE INDEX runs_by_state ON runs (state, created_at DESC, id DESC);
CREATE INDEX runs_unfinished ON runs (updated_at) WHERE state IN ('queued', 'running');

CREATE TABLE executions (
    run_id        uuid        NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step          integer     NOT NULL CHECK (step >= 0),
    attempt       integer     NOT NULL CHECK (attempt >= 1),
    module        text        NOT NULL,
    argv          text[]      NOT NULL,
    timeout_secs  bigint,
    state         text        NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'canceled', 'abandoned')),
    worker_id     uuid,
    pid           integer,                       -- also the module's process group id
    lease_until   timestamptz,                   -- set while running; renewed by the worker's heartbeat
    queued_at     timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,                   -- exec_module confirmed by the broker (outbox marker)
    started_at    timestamptz,
    finished_at   timestamptz,
    duration_ms   bigint,
    exit_code     integer,
    signal        integer,
    error         text,
    stdout_tail   text,
    stderr_tail   text,
    stdout_bytes  bigint,
    stderr_bytes  bigint,
    PRIMARY KEY (run_id, step, attempt)
);
CREATE INDEX executions_leases ON executions (lease_until) WHERE state = 'running';
CREATE INDEX executions_unpublished ON executions (queued_at) WHERE state = 'queued';
CREATE INDEX executions_by_worker ON executions (worker_id) WHERE state = 'running';

CREATE TABLE workers (
    id            uuid PRIMARY KEY,
    host          text        NOT NULL,
    pid           integer     NOT NULL,
    version       text        NOT NULL,
    concurrency   integer     NOT NULL,
    queues        text[]      NOT NULL,
    state         text        NOT NULL CHECK (state IN ('running', 'draining', 'stopped')),
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz
);
CREATE INDEX workers_alive ON workers (heartbeat_at) WHERE state <> 'stopped';
