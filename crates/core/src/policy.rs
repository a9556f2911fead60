//! Run policies that are not retries: where a step runs (its queue) and how
//! many runs of a sequence may hold a slot at once. Parsed with the
//! definitions, frozen in the snapshot, decided here as pure functions; the
//! tracker enforces the admission under a per-sequence lock.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The queue every run goes to unless something more specific names one.
pub const DEFAULT_QUEUE: &str = "etl";

/// Checks a queue name: one that RabbitMQ accepts (at most 255 bytes, not
/// the reserved `amq.` prefix) and that cannot be mistaken for the
/// dead-letter queue this tool declares beside each queue (`<q>.dead`).
pub fn check_queue(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if name.is_empty() || name.len() > 200 || !ok_chars {
        return Err(format!(
            "queue {name:?} is not a valid queue name: use 1 to 200 letters, digits, '_', '-', '.' or ':'"
        ));
    }
    if name.starts_with("amq.") {
        return Err(format!(
            "queue {name:?} starts with \"amq.\", which RabbitMQ reserves; pick another name"
        ));
    }
    if name.ends_with(".dead") {
        return Err(format!(
            "queue {name:?} ends with \".dead\", the suffix of the dead-letter queue kept beside each queue; pick another name"
        ));
    }
    Ok(())
}

/// What a new run does when its sequence already has `max_concurrent` runs
/// holding a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// Wait, first in first out, and start when a slot frees.
    #[default]
    Queue,
    /// Wait, but at most one run waits; a further one is skipped.
    QueueOne,
    /// End at once as `skipped`, naming the run that holds the slot.
    Skip,
    /// Cancel the oldest runs holding a slot, then start once their modules
    /// have stopped.
    CancelRunning,
}

impl OnConflict {
    pub const ALL: [(&'static str, OnConflict); 4] = [
        ("queue", OnConflict::Queue),
        ("queue_one", OnConflict::QueueOne),
        ("skip", OnConflict::Skip),
        ("cancel_running", OnConflict::CancelRunning),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(_, v)| *v == self).map_or("queue", |(s, _)| s)
    }

    pub fn parse(text: &str) -> Result<OnConflict, String> {
        Self::ALL
            .iter()
            .find(|(s, _)| *s == text)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                format!(
                    "\"on_conflict\" is {text:?}; expected one of: {}",
                    Self::ALL.map(|(s, _)| s).join(", ")
                )
            })
    }
}

/// A sequence's concurrency policy. No `max_concurrent`: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Concurrency {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    #[serde(default)]
    pub on_conflict: OnConflict,
}

impl Concurrency {
    pub fn is_limited(&self) -> bool {
        self.max_concurrent.is_some()
    }
}

/// What the sequence's runs look like when a new one asks for a slot.
#[derive(Debug, Clone, Default)]
pub struct Occupancy {
    /// Runs holding a slot, oldest first: `queued`, `running` (waiting for
    /// a retry included), or canceled with a module still stopping.
    pub holders: Vec<Holder>,
    /// Runs waiting for a slot, oldest first.
    pub waiting: Vec<Uuid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub run_id: Uuid,
    /// Already canceled, its module not yet stopped: holds the slot until
    /// it is, but there is nothing left to cancel.
    pub stopping: bool,
}

/// Where a new run goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// A slot is free (or there is no limit): recorded `queued`, published.
    Start,
    /// Recorded `waiting`, with why; started when a slot frees.
    Wait { note: String },
    /// Recorded `skipped` (final), naming the run that held the slot.
    Skip { note: String },
    /// Cancel these runs (the oldest holders, and every waiting run: a newer
    /// run replaces them too), then wait for their slots (or start at once
    /// if that freed one: a canceled run with no module running holds none).
    Cancel { runs: Vec<Uuid>, note: String },
}

/// Decides the admission of a new run. Pure: the caller read `occupancy`
/// under the sequence's lock and persists the answer under it too.
pub fn admit(policy: &Concurrency, occupancy: &Occupancy) -> Admission {
    let Some(max) = policy.max_concurrent else {
        return Admission::Start;
    };
    let held = occupancy.holders.len();
    // Waiting runs are first in line: a new run never overtakes them.
    if held < max as usize && occupancy.waiting.is_empty() {
        return Admission::Start;
    }
    let first = occupancy.holders.first().map(|h| h.run_id);
    let held_by = match first {
        Some(id) => format!("run {id} holds the slot"),
        None => "runs wait before it".into(),
    };
    let limit = format!("max_concurrent {max}");
    match policy.on_conflict {
        OnConflict::Queue => Admission::Wait {
            note: format!("waiting for a slot ({limit}: {held_by})"),
        },
        OnConflict::QueueOne if occupancy.waiting.is_empty() => Admission::Wait {
            note: format!("waiting for a slot ({limit}: {held_by}; on_conflict queue_one)"),
        },
        OnConflict::QueueOne => Admission::Skip {
            note: format!("skipped: {held_by} and a run already waits ({limit}, on_conflict queue_one)"),
        },
        OnConflict::Skip => Admission::Skip {
            note: format!("skipped: {held_by} ({limit}, on_conflict skip)"),
        },
        OnConflict::CancelRunning => {
            // Cancel the oldest live holders until one slot would be free.
            let excess = (held + 1).saturating_sub(max as usize);
            let mut runs: Vec<Uuid> = occupancy
                .holders
                .iter()
                .filter(|h| !h.stopping)
                .take(excess)
                .map(|h| h.run_id)
                .collect();
            let mut names = runs.iter().map(Uuid::to_string).collect::<Vec<_>>().join(", ");
            if names.is_empty() {
                names = held_by.clone();
            }
            runs.extend(&occupancy.waiting);
            Admission::Cancel {
                note: format!("waiting for the canceled run(s) to stop: {names} ({limit}, on_conflict cancel_running)"),
                runs,
            }
        }
    }
}

/// How many waiting runs may start now.
pub fn free_slots(policy: &Concurrency, holders: usize) -> usize {
    match policy.max_concurrent {
        Some(max) => (max as usize).saturating_sub(holders),
        None => usize::MAX,
    }
}

/// The reason recorded on a run canceled to make room for a newer one.
pub fn replaced_note(newer: Uuid) -> String {
    format!("canceled: run {newer} of the same sequence replaced it (on_conflict cancel_running)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: u32, on_conflict: OnConflict) -> Concurrency {
        Concurrency {
            max_concurrent: Some(max),
            on_conflict,
        }
    }

    fn occupancy(holders: usize, waiting: u128) -> Occupancy {
        Occupancy {
            holders: (0..holders)
                .map(|i| Holder {
                    run_id: Uuid::from_u128(i as u128 + 1),
                    stopping: false,
                })
                .collect(),
            waiting: (0..waiting).map(|i| Uuid::from_u128(1000 + i)).collect(),
        }
    }

    #[test]
    fn no_limit_always_starts() {
        assert_eq!(admit(&Concurrency::default(), &occupancy(50, 3)), Admission::Start);
    }

    #[test]
    fn a_free_slot_starts_unless_runs_already_wait() {
        let p = policy(2, OnConflict::Queue);
        assert_eq!(admit(&p, &occupancy(1, 0)), Admission::Start);
        assert!(matches!(admit(&p, &occupancy(1, 1)), Admission::Wait { .. }));
        assert!(matches!(admit(&p, &occupancy(2, 0)), Admission::Wait { .. }));
    }

    #[test]
    fn queue_one_lets_one_wait_and_skips_the_next() {
        let p = policy(1, OnConflict::QueueOne);
        assert!(matches!(admit(&p, &occupancy(1, 0)), Admission::Wait { .. }));
        let Admission::Skip { note } = admit(&p, &occupancy(1, 1)) else {
            panic!()
        };
        assert!(note.contains(&Uuid::from_u128(1).to_string()), "{note}");
    }

    #[test]
    fn skip_names_the_run_holding_the_slot() {
        let Admission::Skip { note } = admit(&policy(1, OnConflict::Skip), &occupancy(1, 0)) else {
            panic!()
        };
        assert!(
            note.contains(&format!("run {} holds the slot", Uuid::from_u128(1))),
            "{note}"
        );
        assert!(note.contains("max_concurrent 1"), "{note}");
    }

    #[test]
    fn cancel_running_cancels_the_oldest_live_holders_only() {
        let mut occ = occupancy(3, 0);
        occ.holders[0].stopping = true;
        let Admission::Cancel { runs, .. } = admit(&policy(2, OnConflict::CancelRunning), &occ) else {
            panic!()
        };
        // 3 held, max 2: two must go for one to free; the first is already stopping.
        assert_eq!(runs, vec![Uuid::from_u128(2), Uuid::from_u128(3)]);
        // Runs waiting for a slot are replaced by the newer run too.
        let Admission::Cancel { runs, .. } = admit(&policy(1, OnConflict::CancelRunning), &occupancy(1, 2)) else {
            panic!()
        };
        assert_eq!(
            runs,
            vec![Uuid::from_u128(1), Uuid::from_u128(1000), Uuid::from_u128(1001)]
        );
    }

    #[test]
    fn free_slots_saturate() {
        assert_eq!(free_slots(&policy(1, OnConflict::Queue), 3), 0);
        assert_eq!(free_slots(&policy(3, OnConflict::Queue), 1), 2);
    }

    #[test]
    fn queue_names_rabbitmq_would_refuse_or_we_would_confuse_are_refused() {
        for bad in ["", "amq.x", "a b", "x.dead", &"q".repeat(201), "é"] {
            assert!(check_queue(bad).is_err(), "{bad:?}");
        }
        for good in ["etl", "heavy-2", "team.a:big"] {
            check_queue(good).unwrap();
        }
    }

    #[test]
    fn on_conflict_misspelled_lists_the_choices() {
        let e = OnConflict::parse("skipp").unwrap_err();
        assert!(e.contains("queue, queue_one, skip, cancel_running"), "{e}");
    }
}
