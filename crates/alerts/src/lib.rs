//! Alerts: who is told what, and how. `alerts.json` names targets (a
//! webhook, an email address) and the events each wants; the tracker
//! records events in the same statement as the state change that causes
//! them; a sender (in the workers, one at a time under a lease) delivers
//! them with retries, bounding floods per target.
//!
//! # Layout
//! - [`config`]: `alerts.json`, parsed and validated from text (no I/O).
//! - [`event`]: an event as recorded, and its kinds.
//! - [`payload`]: what a target is sent (the line of text, the webhook's
//!   JSON and its HMAC signature, the email), pure.
//! - [`throttle`]: held or sent, when held ones go, what an answer means,
//!   backoff; pure, times passed in.
//! - [`send`]: HTTP (webhooks, healthcheck pings) and SMTP.
//! - [`sender`]: the loop every worker runs, one at a time under a lease:
//!   route new events to targets, attempt due deliveries, record outcomes
//!   (through the tracker's `Store`: no SQL here).
//!
//! Architecture invariant: `config`, `event`, `payload` and `throttle` are
//! pure (no file, socket, clock or environment), so every decision is
//! unit-tested; I/O lives in `send` and `sender` only.

pub mod config;
pub mod event;
pub mod payload;
pub mod send;
pub mod sender;
pub mod throttle;

pub use config::{AlertsConfig, HEALTHCHECK_TARGET, Target, TargetKind, parse};
pub use event::{Event, EventKind, Folded};
pub use throttle::{Admission, Answer, Next};
