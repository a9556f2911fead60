-- `/metrics`' stalls of the last hour are the `step_stalled` events
-- recorded then (a stall that resumed counts too, its execution's mark
-- lifted since). Partial: stalls are rare among the events.
CREATE INDEX events_stalled ON events (at) WHERE kind = 'step_stalled';
