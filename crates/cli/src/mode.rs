//! Which backends a command uses: the embedded store (one SQLite file that
//! also carries the queue; nothing to install), or PostgreSQL and RabbitMQ
//! (any number of hosts). Chosen by the two URLs, nothing else.

use crate::cli::Global;
use std::path::PathBuf;

/// The default RabbitMQ URL of the tools that need one whatever the mode
/// (the PostgreSQL benchmarks).
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// One SQLite file holds the record and the queue.
    Embedded { path: PathBuf },
    /// PostgreSQL holds the record, RabbitMQ carries the messages.
    Distributed { database_url: String, amqp_url: String },
}

impl Mode {
    /// What `g`'s URLs select; a half-configured pair is an error that says
    /// what to set.
    pub fn of(g: &Global) -> anyhow::Result<Mode> {
        let db = g.database_url.as_deref().filter(|u| !u.is_empty());
        let amqp = g.amqp_url.as_deref().filter(|u| !u.is_empty());
        match (db, amqp) {
            (None, None) => Ok(Mode::Embedded {
                path: g.project.join(".scheduler").join("scheduler.db"),
            }),
            (Some(db), amqp) if sqlite_path(db).is_some() => {
                if amqp.is_some() {
                    anyhow::bail!(
                        "DATABASE_URL is a SQLite file ({db}), whose store carries its own queue, but AMQP_URL is set too. \
                         Unset AMQP_URL for the embedded mode, or set DATABASE_URL to a postgres:// URL for the distributed one"
                    );
                }
                let path = sqlite_path(db).unwrap_or_default();
                if path.as_os_str().is_empty() {
                    anyhow::bail!(
                        "DATABASE_URL {db:?} names no file: write sqlite://PATH (e.g. sqlite:///var/lib/scheduler/scheduler.db), \
                         or unset it to use .scheduler/scheduler.db in the project"
                    );
                }
                Ok(Mode::Embedded { path })
            }
            (Some(db), Some(amqp)) if db.starts_with("postgres://") || db.starts_with("postgresql://") => {
                Ok(Mode::Distributed {
                    database_url: db.to_string(),
                    amqp_url: amqp.to_string(),
                })
            }
            (Some(db), None) if db.starts_with("postgres://") || db.starts_with("postgresql://") => anyhow::bail!(
                "DATABASE_URL is set to PostgreSQL but AMQP_URL is not: the distributed mode needs both. \
                 Set AMQP_URL (e.g. {DEFAULT_AMQP_URL}), or unset DATABASE_URL to use the embedded store"
            ),
            (None, Some(_)) => anyhow::bail!(
                "AMQP_URL is set but DATABASE_URL is not: the distributed mode needs both. Set DATABASE_URL \
                 (e.g. postgres://postgres@127.0.0.1:5432/scheduler), or unset AMQP_URL to use the embedded store"
            ),
            (Some(db), _) => anyhow::bail!(
                "DATABASE_URL {db:?} is neither sqlite://PATH (the embedded store) nor postgres://… (the distributed mode)"
            ),
        }
    }

    /// The line every command that opens the store logs first.
    pub fn describe(&self) -> String {
        match self {
            Mode::Embedded { path } => format!(
                "embedded mode: store and queue in {} (no PostgreSQL or RabbitMQ; one host)",
                path.display()
            ),
            Mode::Distributed { database_url, amqp_url } => format!(
                "distributed mode: PostgreSQL at {}, RabbitMQ at {}",
                scheduler_core::redact_url(database_url),
                scheduler_core::redact_url(amqp_url)
            ),
        }
    }
}

/// `sqlite://PATH` or `sqlite:PATH` (PATH absolute, or relative to the
/// current directory); None for other schemes.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let rest = rest.split('?').next().unwrap_or(rest);
    Some(PathBuf::from(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(db: Option<&str>, amqp: Option<&str>) -> Global {
        Global {
            project: PathBuf::from("/p"),
            database_url: db.map(str::to_string),
            amqp_url: amqp.map(str::to_string),
            queue: "etl".into(),
            queue_type: scheduler_broker::QueueType::Quorum,
            delivery_limit: 20,
            log_format: "text".into(),
            queue_expires_ms: None,
        }
    }

    #[test]
    fn no_url_is_the_embedded_store_in_the_project() {
        assert_eq!(
            Mode::of(&global(None, None)).unwrap(),
            Mode::Embedded {
                path: PathBuf::from("/p/.scheduler/scheduler.db")
            }
        );
    }

    #[test]
    fn a_sqlite_url_picks_the_file() {
        assert_eq!(
            Mode::of(&global(Some("sqlite:///var/lib/s.db"), None)).unwrap(),
            Mode::Embedded {
                path: PathBuf::from("/var/lib/s.db")
            }
        );
        assert_eq!(
            Mode::of(&global(Some("sqlite://rel/s.db"), None)).unwrap(),
            Mode::Embedded {
                path: PathBuf::from("rel/s.db")
            }
        );
    }

    #[test]
    fn both_server_urls_are_the_distributed_mode() {
        let mode = Mode::of(&global(Some("postgres://u@h/db"), Some("amqp://h"))).unwrap();
        assert!(matches!(mode, Mode::Distributed { .. }));
        assert!(mode.describe().starts_with("distributed mode"));
    }

    #[test]
    fn a_half_configured_pair_says_what_to_set() {
        let e = Mode::of(&global(Some("postgres://u@h/db"), None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Set AMQP_URL"), "{e}");
        let e = Mode::of(&global(None, Some("amqp://h"))).unwrap_err().to_string();
        assert!(e.contains("Set DATABASE_URL"), "{e}");
        let e = Mode::of(&global(Some("sqlite://x.db"), Some("amqp://h")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Unset AMQP_URL"), "{e}");
        let e = Mode::of(&global(Some("mysql://h/db"), Some("amqp://h")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither"), "{e}");
    }
}
