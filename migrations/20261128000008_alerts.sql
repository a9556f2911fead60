-- Alerts: events recorded in the same statement (or transaction) as the
-- state change that causes them, and their deliveries to the targets of
-- alerts.json, each attempt and its outcome. A sender (one worker at a time,
-- under `alert_lease`) routes new events to targets, then claims due
-- deliveries; a delivery's row is the exactly-once-per-target guarantee.

CREATE TABLE events (
    id         bigserial   PRIMARY KEY,
    kind       text        NOT NULL CHECK (kind IN (
                   'run_failed', 'run_recovered', 'step_retrying', 'step_stalled',
                   'slot_missed', 'slot_skipped', 'worker_lost', 'test',
                   'healthcheck_start', 'healthcheck_success', 'healthcheck_fail')),
    at         timestamptz NOT NULL DEFAULT now(),
    sequence   text,
    -- No foreign key: an event outlives the pruning of its run.
    run_id     uuid,
    step       integer,
    attempt    integer,
    schedule   text,
    slot_at    timestamptz,
    worker_id  uuid,
    message    text,
    detail     jsonb       NOT NULL DEFAULT '{}',
    -- Set once the sender created its deliveries (none if no target wants it).
    routed_at  timestamptz
);
CREATE INDEX events_unrouted ON events (id) WHERE routed_at IS NULL;
CREATE INDEX events_by_run ON events (run_id) WHERE run_id IS NOT NULL;

-- One row per event and target: `pending` until sent (`sent`) or given up
-- (`failed`); `held` by a target's max_frequency until its period ends,
-- then sent with the others of its kind and subject counted into it, which
-- become `folded`.
CREATE TABLE alert_deliveries (
    event_id      bigint      NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    target        text        NOT NULL,
    kind          text        NOT NULL,
    -- What throttling counts per: the sequence, the schedule, or ''.
    subject       text        NOT NULL,
    state         text        NOT NULL CHECK (state IN ('pending', 'sent', 'failed', 'held', 'folded')),
    -- A healthcheck ping's full URL.
    url           text,
    folded        integer     NOT NULL DEFAULT 0,
    folded_since  timestamptz,
    folded_into   bigint,
    attempts      integer     NOT NULL DEFAULT 0,
    next_at       timestamptz NOT NULL DEFAULT now(),
    claimed_by    uuid,
    claimed_until timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz,
    finished_at   timestamptz,
    last_status   integer,
    last_error    text,
    PRIMARY KEY (event_id, target)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_at) WHERE state = 'pending';
CREATE INDEX alert_deliveries_held ON alert_deliveries (target, kind, subject) WHERE state = 'held';
CREATE INDEX alert_deliveries_last_sent ON alert_deliveries (target, kind, subject, sent_at DESC) WHERE sent_at IS NOT NULL;
CREATE INDEX alert_deliveries_newest ON alert_deliveries (created_at DESC);

-- Every attempt of a delivery and what the other end answered.
CREATE TABLE alert_attempts (
    event_id    bigint      NOT NULL,
    target      text        NOT NULL,
    attempt     integer     NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    outcome     text        NOT NULL CHECK (outcome IN ('sent', 'retry', 'failed')),
    status      integer,
    response    text,
    elapsed_ms  double precision NOT NULL,
    worker_id   uuid,
    PRIMARY KEY (event_id, target, attempt),
    FOREIGN KEY (event_id, target) REFERENCES alert_deliveries ON DELETE CASCADE
);

-- Attempts by target and outcome, counted in the statement that records
-- each one: the counter /metrics exports (it survives the pruning of old
-- deliveries).
CREATE TABLE alert_counts (
    target   text   NOT NULL,
    outcome  text   NOT NULL,
    n        bigint NOT NULL,
    PRIMARY KEY (target, outcome)
);

-- A sequence whose latest finished run failed, until one succeeds: that
-- success records run_recovered (the row is deleted in the same statement).
CREATE TABLE failing_sequences (
    sequence  text        PRIMARY KEY,
    since     timestamptz NOT NULL,
    failures  integer     NOT NULL,
    last_run  uuid        NOT NULL
);

-- One sender at a time: the worker holding this lease delivers alerts.
CREATE TABLE alert_lease (
    id      integer PRIMARY KEY CHECK (id = 1),
    holder  uuid,
    until   timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO alert_lease (id) VALUES (1);

-- Recovery marks a worker lost (once per silence) and records worker_lost
-- in the same statement.
ALTER TABLE workers ADD COLUMN lost_at timestamptz;
