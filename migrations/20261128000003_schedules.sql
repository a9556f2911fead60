-- Schedules: their state and the ledger of every slot, all in PostgreSQL
-- (no scheduler keeps any in memory), so any number of `scheduler beat`
-- processes, restarted at will, fire each slot exactly once.

CREATE TABLE schedules (
    name         text PRIMARY KEY,
    -- When a scheduler first saw it: slots before are not caught up.
    first_seen   timestamptz NOT NULL DEFAULT now(),
    paused       boolean     NOT NULL DEFAULT false,
    paused_by    text,
    paused_note  text,
    paused_at    timestamptz,
    -- The last pause ended then: slots of (paused_at, resumed_at] are
    -- recorded as paused, even if no scheduler ran during the pause.
    resumed_at   timestamptz
);

-- One row per slot (schedule, fire time), written in the same transaction
-- as the run it starts: the primary key is what makes a slot fire once.
CREATE TABLE schedule_slots (
    schedule     text        NOT NULL,
    slot_at      timestamptz NOT NULL,
    fate         text        NOT NULL CHECK (fate IN ('started', 'skipped', 'coalesced', 'missed', 'paused', 'backfilled')),
    run_id       uuid        REFERENCES runs (id) ON DELETE SET NULL,
    note         text,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, slot_at)
);

-- A scheduled run carries its schedule and its slot as its logical date.
ALTER TABLE runs ADD COLUMN schedule text, ADD COLUMN logical_date timestamptz;
