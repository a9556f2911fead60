-- The embedded store (zero-server mode): the same record as PostgreSQL's
-- (migrations/*.sql, whose comments explain each table), in one SQLite file,
-- plus the queue that carries messages instead of RabbitMQ.
--
-- Conventions (crates/tracker/src/sqlite/mod.rs says why):
-- - uuid: BLOB of 16 bytes (sqlx's encoding of `Uuid`); UUIDv7 bytes sort by time.
-- - timestamptz: TEXT in RFC 3339, always UTC with "+00:00" (sqlx's encoding
--   of `DateTime<Utc>`, or the NOW default below), so text order is time
--   order. Times are computed in Rust and bound, never with SQL date arithmetic.
-- - jsonb: TEXT holding JSON; text[]: TEXT holding a JSON array of strings.
-- - boolean: INTEGER 0/1; bytea: BLOB; double precision: REAL.
-- NOW is strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') (milliseconds).

CREATE TABLE runs (
    id            BLOB PRIMARY KEY,
    sequence      TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('waiting', 'queued', 'running', 'succeeded', 'failed', 'canceled', 'skipped')),
    queue         TEXT    NOT NULL,
    trigger       TEXT    NOT NULL,
    snapshot      TEXT    NOT NULL,
    step_count    INTEGER NOT NULL CHECK (step_count > 0),
    failed_step   INTEGER,
    error         TEXT,
    created_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    started_at    TEXT,
    finished_at   TEXT,
    published_at  TEXT,
    updated_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    note          TEXT,
    schedule      TEXT,
    logical_date  TEXT
) WITHOUT ROWID;
CREATE INDEX runs_newest ON runs (created_at DESC, id DESC);
CREATE INDEX runs_by_sequence ON runs (sequence, created_at DESC, id DESC);
CREATE INDEX runs_by_state ON runs (state, created_at DESC, id DESC);
CREATE INDEX runs_unfinished ON runs (updated_at) WHERE state IN ('queued', 'running');
CREATE INDEX runs_by_sequence_state ON runs (sequence, state, created_at DESC, id DESC);
CREATE INDEX runs_waiting ON runs (sequence, created_at, id) WHERE state = 'waiting';
CREATE INDEX runs_by_schedule ON runs (schedule, created_at DESC, id DESC) WHERE schedule IS NOT NULL;
CREATE INDEX runs_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE executions (
    run_id        BLOB    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step          INTEGER NOT NULL CHECK (step >= 0),
    attempt       INTEGER NOT NULL CHECK (attempt >= 1),
    module        TEXT    NOT NULL,
    argv          TEXT    NOT NULL,
    timeout_secs  INTEGER,
    state         TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'canceled', 'abandoned')),
    worker_id     BLOB,
    pid           INTEGER,
    lease_until   TEXT,
    queued_at     TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    published_at  TEXT,
    started_at    TEXT,
    finished_at   TEXT,
    duration_ms   INTEGER,
    exit_code     INTEGER,
    signal        INTEGER,
    error         TEXT,
    stdout_tail   TEXT,
    stderr_tail   TEXT,
    stdout_bytes  INTEGER,
    stderr_bytes  INTEGER,
    retry         INTEGER NOT NULL DEFAULT 0 CHECK (retry >= 0),
    due_at        TEXT,
    queue         TEXT,
    log_bytes     INTEGER,
    log_omitted   INTEGER,
    wall_us       INTEGER,
    peak_rss_kib  INTEGER,
    user_cpu_us   INTEGER,
    sys_cpu_us    INTEGER,
    output_path   TEXT,
    output_bytes  INTEGER,
    output_mtime  TEXT,
    output_sha256 TEXT,
    warnings      TEXT,
    stalled_at    TEXT,
    PRIMARY KEY (run_id, step, attempt)
) WITHOUT ROWID;
CREATE INDEX executions_leases ON executions (lease_until) WHERE state = 'running';
CREATE INDEX executions_unpublished ON executions (queued_at) WHERE state = 'queued';
CREATE INDEX executions_by_worker ON executions (worker_id) WHERE state = 'running';
CREATE INDEX executions_finished ON executions (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX executions_retries ON executions (queued_at) WHERE retry > 0;

CREATE TABLE workers (
    id            BLOB PRIMARY KEY,
    host          TEXT    NOT NULL,
    pid           INTEGER NOT NULL,
    version       TEXT    NOT NULL,
    concurrency   INTEGER NOT NULL,
    queues        TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('running', 'draining', 'stopped')),
    started_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    heartbeat_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    stopped_at    TEXT,
    lost_at       TEXT
) WITHOUT ROWID;
CREATE INDEX workers_alive ON workers (heartbeat_at) WHERE state <> 'stopped';

CREATE TABLE reaper_lease (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    holder    BLOB,
    until     TEXT NOT NULL DEFAULT '1970-01-01T00:00:00+00:00'
);
INSERT INTO reaper_lease (id) VALUES (1);

CREATE TABLE schedules (
    name         TEXT PRIMARY KEY,
    first_seen   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    paused       INTEGER NOT NULL DEFAULT 0,
    paused_by    TEXT,
    paused_note  TEXT,
    paused_at    TEXT,
    resumed_at   TEXT
) WITHOUT ROWID;

CREATE TABLE schedule_slots (
    schedule     TEXT NOT NULL,
    slot_at      TEXT NOT NULL,
    fate         TEXT NOT NULL CHECK (fate IN ('started', 'skipped', 'coalesced', 'missed', 'paused', 'backfilled')),
    run_id       BLOB REFERENCES runs (id) ON DELETE SET NULL,
    note         TEXT,
    recorded_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    late_at      TEXT,
    PRIMARY KEY (schedule, slot_at)
) WITHOUT ROWID;
CREATE INDEX schedule_slots_by_run ON schedule_slots (run_id) WHERE run_id IS NOT NULL;
CREATE INDEX schedule_slots_not_run ON schedule_slots (schedule, fate) WHERE fate IN ('missed', 'skipped');

CREATE TABLE execution_logs (
    run_id   BLOB    NOT NULL,
    step     INTEGER NOT NULL,
    attempt  INTEGER NOT NULL,
    pos      INTEGER NOT NULL CHECK (pos >= 0),
    stream   TEXT    NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    at       TEXT    NOT NULL,
    data     BLOB    NOT NULL,
    PRIMARY KEY (run_id, step, attempt, pos),
    FOREIGN KEY (run_id, step, attempt) REFERENCES executions (run_id, step, attempt) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL CHECK (kind IN (
                   'run_failed', 'run_recovered', 'step_retrying', 'step_stalled',
                   'slot_missed', 'slot_skipped', 'worker_lost', 'test',
                   'healthcheck_start', 'healthcheck_success', 'healthcheck_fail')),
    at         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    sequence   TEXT,
    run_id     BLOB,
    step       INTEGER,
    attempt    INTEGER,
    schedule   TEXT,
    slot_at    TEXT,
    worker_id  BLOB,
    message    TEXT,
    detail     TEXT NOT NULL DEFAULT '{}',
    routed_at  TEXT
);
CREATE INDEX events_unrouted ON events (id) WHERE routed_at IS NULL;
CREATE INDEX events_by_run ON events (run_id) WHERE run_id IS NOT NULL;
CREATE INDEX events_stalled ON events (at) WHERE kind = 'step_stalled';
CREATE INDEX events_at ON events (at, id);

CREATE TABLE alert_deliveries (
    event_id      INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    target        TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    subject       TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('pending', 'sent', 'failed', 'held', 'folded')),
    url           TEXT,
    folded        INTEGER NOT NULL DEFAULT 0,
    folded_since  TEXT,
    folded_into   INTEGER,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_at       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    claimed_by    BLOB,
    claimed_until TEXT,
    created_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    sent_at       TEXT,
    finished_at   TEXT,
    last_status   INTEGER,
    last_error    TEXT,
    released_at   TEXT,
    PRIMARY KEY (event_id, target)
) WITHOUT ROWID;
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_at) WHERE state = 'pending';
CREATE INDEX alert_deliveries_held ON alert_deliveries (target, kind, subject) WHERE state = 'held';
CREATE INDEX alert_deliveries_newest ON alert_deliveries (created_at DESC);
CREATE INDEX alert_deliveries_released ON alert_deliveries (target, kind, subject, released_at DESC)
    WHERE released_at IS NOT NULL;

CREATE TABLE alert_attempts (
    event_id    INTEGER NOT NULL,
    target      TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    at          TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    outcome     TEXT    NOT NULL CHECK (outcome IN ('sent', 'retry', 'failed')),
    status      INTEGER,
    response    TEXT,
    elapsed_ms  REAL    NOT NULL,
    worker_id   BLOB,
    PRIMARY KEY (event_id, target, attempt),
    FOREIGN KEY (event_id, target) REFERENCES alert_deliveries (event_id, target) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE alert_counts (
    target   TEXT    NOT NULL,
    outcome  TEXT    NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (target, outcome)
) WITHOUT ROWID;

CREATE TABLE failing_sequences (
    sequence  TEXT    PRIMARY KEY,
    since     TEXT    NOT NULL,
    failures  INTEGER NOT NULL,
    last_run  BLOB    NOT NULL
) WITHOUT ROWID;

CREATE TABLE alert_lease (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    holder  BLOB,
    until   TEXT NOT NULL DEFAULT '1970-01-01T00:00:00+00:00'
);
INSERT INTO alert_lease (id) VALUES (1);

-- What PostgreSQL's sqlx-side store does not need: which project the file
-- belongs to (a second project pointed at it is refused).
CREATE TABLE store_meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
) WITHOUT ROWID;

-- The queue that replaces RabbitMQ in this mode (`sqlite/queue.rs`). A
-- message is `ready` until an inbox takes it (`taken`, with the inbox's id);
-- acknowledged means deleted; requeued means `ready` again; dead-lettered
-- means `dead` (kept for an operator, as `Q.dead` is with RabbitMQ). An
-- inbox whose process is gone (its row in queue_consumers not refreshed)
-- gives its taken messages back.
CREATE TABLE queues (
    name         TEXT PRIMARY KEY,
    declared_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'))
) WITHOUT ROWID;

CREATE TABLE queue_messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    queue         TEXT    NOT NULL REFERENCES queues (name),
    body          BLOB    NOT NULL,
    state         TEXT    NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'taken', 'dead')),
    consumer      BLOB,
    deliveries    INTEGER NOT NULL DEFAULT 0,
    published_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    taken_at      TEXT
);
CREATE INDEX queue_messages_ready ON queue_messages (queue, id) WHERE state = 'ready';
CREATE INDEX queue_messages_taken ON queue_messages (consumer) WHERE state = 'taken';

CREATE TABLE queue_consumers (
    id        BLOB PRIMARY KEY,
    name      TEXT    NOT NULL,
    pid       INTEGER NOT NULL,
    queues    TEXT    NOT NULL,
    seen_at   TEXT    NOT NULL
) WITHOUT ROWID;
