//! `scheduler logs RUN [--step N] [--attempt K] [--follow] [--stream S]`:
//! a run's module output from the record, from any host, while it runs and
//! after its worker is gone. Steps count from 1, as in `show`.
//!
//! To a terminal, control characters and bytes that are not UTF-8 are shown
//! escaped (`\x1b`, `\xff`) so a log cannot rewrite the screen; to a pipe or
//! a file the bytes go out as the module wrote them.

use crate::cli::Global;
use crate::connect;
use anyhow::Context;
use scheduler_tracker::{ExecKey, LogState, Store, omitted_line};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What to show.
pub struct LogsArgs {
    pub run_id: String,
    pub step: Option<u32>,
    pub attempt: Option<u32>,
    pub follow: bool,
    pub stream: Option<String>,
}

/// Rows read per query.
const PAGE: i64 = 256;
/// How often a follower looks for more.
const POLL: Duration = Duration::from_millis(200);
/// A final run whose log has no total this long after (its worker died
/// before writing the last of it) is not waited for any longer.
const GIVE_UP_AFTER: Duration = Duration::from_secs(3);

pub async fn logs(g: &Global, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let run_id: Uuid = args.run_id.trim().parse().with_context(|| {
        format!(
            "{:?} is not a run id (a UUID, as printed by `scheduler start`)",
            args.run_id
        )
    })?;
    let stream = match args.stream.as_deref() {
        None => None,
        Some(s @ ("stdout" | "stderr")) => Some(s.to_string()),
        Some(other) => anyhow::bail!("--stream {other:?}: write stdout or stderr"),
    };
    if args.step == Some(0) || args.attempt == Some(0) {
        anyhow::bail!("--step and --attempt count from 1, as `scheduler show` prints them");
    }
    let store = connect::store(g, 1).await?;
    let mut out = Out::new();
    let mut shown: Vec<Shown> = Vec::new();
    let mut final_since: Option<Instant> = None;
    loop {
        let states = store.log_states(run_id).await?;
        if states.is_empty() {
            if store.run_detail(run_id).await?.is_none() {
                eprintln!("error: no run {run_id} is recorded; `scheduler runs` lists recent runs");
                return Ok(ExitCode::from(1));
            }
            if !args.follow {
                eprintln!("run {run_id} has not run a step yet");
                return Ok(ExitCode::SUCCESS);
            }
        }
        let chosen = choose(&states, args.step, args.attempt);
        if chosen.is_empty() && !states.is_empty() && !args.follow {
            let step = args.step.unwrap_or(1);
            anyhow::bail!(
                "run {run_id} has no execution of step {step}{}; `scheduler show {run_id}` lists them",
                args.attempt.map(|a| format!(" attempt {a}")).unwrap_or_default()
            );
        }
        let many = args.step.is_none();
        for s in &chosen {
            let key = ExecKey {
                run_id,
                step: s.step as u32,
                attempt: s.attempt as u32,
            };
            let at = match shown.iter().position(|x| x.key == key) {
                Some(i) => i,
                None => {
                    if many {
                        out.header(&format!(
                            "==> step {} ({}), attempt {} <==",
                            s.step + 1,
                            s.module,
                            s.attempt
                        ));
                    }
                    shown.push(Shown { key, end: 0 });
                    shown.len() - 1
                }
            };
            let end = print_from(&*store, key, shown[at].end, stream.as_deref(), &mut out).await?;
            shown[at].end = end;
            if let (Some(total), Some(omitted)) = (s.log_bytes, s.log_omitted)
                && end < total
                && omitted > 0
            {
                // The cap's gap at the very end cannot happen (the tail is
                // kept); a gap of lost bytes at the end can.
                out.text(&omitted_line(total - end));
                shown[at].end = total;
            }
        }
        out.flush();
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        let run_final = states.first().is_some_and(|s| is_final(&s.run_state));
        let complete = chosen.iter().all(|s| s.log_bytes.is_some());
        if run_final {
            let since = *final_since.get_or_insert_with(Instant::now);
            if complete || since.elapsed() > GIVE_UP_AFTER {
                if !complete {
                    eprintln!("(the log may be incomplete: a worker ended before writing the last of it)");
                }
                return Ok(ExitCode::SUCCESS);
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

struct Shown {
    key: ExecKey,
    /// Where the rows printed so far end.
    end: i64,
}

fn is_final(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "canceled" | "skipped")
}

/// The executions to show: one step's given (or latest) attempt, or every
/// execution of the run in order.
fn choose(states: &[LogState], step: Option<u32>, attempt: Option<u32>) -> Vec<LogState> {
    match step {
        None => states.to_vec(),
        Some(step) => {
            let of_step = states.iter().filter(|s| s.step as u32 + 1 == step);
            match attempt {
                Some(a) => of_step.filter(|s| s.attempt as u32 == a).cloned().collect(),
                None => of_step.max_by_key(|s| s.attempt).cloned().into_iter().collect(),
            }
        }
    }
}

/// Prints one execution's rows from byte `from` on; returns where they end.
async fn print_from(
    store: &dyn Store,
    key: ExecKey,
    mut from: i64,
    stream: Option<&str>,
    out: &mut Out,
) -> anyhow::Result<i64> {
    loop {
        let rows = store.read_log(key, from, PAGE).await?;
        for row in &rows {
            if row.pos > from {
                out.text(&omitted_line(row.pos - from));
            }
            // A row that began before `from` was partly printed already.
            let skip = (from - row.pos).max(0) as usize;
            if stream.is_none_or(|s| s == row.stream) {
                out.bytes(&row.data[skip.min(row.data.len())..]);
            }
            from = row.end();
        }
        if (rows.len() as i64) < PAGE {
            return Ok(from);
        }
    }
}

/// Stdout, escaped when it is a terminal.
struct Out {
    tty: bool,
    w: std::io::BufWriter<std::io::Stdout>,
}

impl Out {
    fn new() -> Out {
        Out {
            tty: std::io::stdout().is_terminal(),
            w: std::io::BufWriter::new(std::io::stdout()),
        }
    }

    fn header(&mut self, line: &str) {
        let _ = writeln!(self.w, "{line}");
    }

    fn text(&mut self, s: &str) {
        let _ = self.w.write_all(s.as_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        if self.tty {
            let _ = self.w.write_all(escape(b).as_bytes());
        } else {
            let _ = self.w.write_all(b);
        }
    }

    fn flush(&mut self) {
        let _ = self.w.flush();
    }
}

/// Control characters (but newline and tab) and bytes that are not UTF-8
/// as `\xNN`.
pub fn escape(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() && c != '\n' && c != '\t' {
                s.push_str(&format!("\\x{:02x}", c as u32));
            } else {
                s.push(c);
            }
        }
        for byte in chunk.invalid() {
            s.push_str(&format!("\\x{byte:02x}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_control_characters_and_bad_utf8_but_not_newlines() {
        assert_eq!(super::escape(b"ok\tdone\n"), "ok\tdone\n");
        assert_eq!(super::escape(b"\x1b[2Jgone\r\n"), "\\x1b[2Jgone\\x0d\n");
        assert_eq!(super::escape("é \u{7f}".as_bytes()), "é \\x7f");
        assert_eq!(super::escape(b"a\xffb"), "a\\xffb");
    }
}
