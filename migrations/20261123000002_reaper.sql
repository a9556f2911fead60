-- One reaper at a time: the worker holding this lease runs recovery.
CREATE TABLE reaper_lease (
    id        integer PRIMARY KEY CHECK (id = 1),
    holder    uuid,
    until     timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO reaper_lease (id) VALUES (1);
