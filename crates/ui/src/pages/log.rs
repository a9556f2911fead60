//! A run's module logs on its page, one execution at a time (`step` counts
//! from 0 and `attempt` from 1, as in the JSON API; no `attempt`: the
//! step's latest):
//!
//! - `/runs/{id}/log?step=&attempt=[&to=]`: an HTML chunk of the log, its
//!   last ~256 KiB, or the ~256 KiB before `to` (the page's "load earlier");
//!   `from=` reads from there instead.
//! - `/runs/{id}/log/events?step=&attempt=&from=`: server-sent events while
//!   it is written: `log` (a chunk, its `id` the offset to resume from, which
//!   the browser sends back as `Last-Event-ID` when it reconnects),
//!   `finished` once the execution is seen ended while the last of its log
//!   is still awaited, then `end` (`complete`; `incomplete` when its worker
//!   ended before writing the last of it; `gone` when it was pruned) and the
//!   stream ends.
//!
//! A chunk says whether its execution was running when it was read
//! (`data-running`): the panel says "live" only then, never for an attempt
//! that ended (an abandoned one, or one whose log's total is not written
//! yet, is followed to its end all the same, said as such).
//! - `/runs/{id}/log/download?step=&attempt=`: the raw bytes.
//!
//! The page's script (`assets/app.js`) puts them together. A chunk's lines
//! are spans of class `o` (stdout) or `e` (stderr), `b` where a line begins,
//! `gap` for the omitted-bytes separator.
//!
//! Everything a module wrote is shown as text: askama escapes markup, and
//! [`visible`] turns control characters and bytes that are not UTF-8 into
//! escapes (`\x1b`, `\xff`) styled apart, so a log can neither inject
//! markup nor restyle the page with terminal escapes.

use crate::AppState;
use crate::error::{PageResult, Problem};
use crate::logs::{self, Chunk, TAIL_BYTES, Window};
use crate::params::{self, LogParams, LogQuery};
use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use scheduler_tracker::{ExecKey, LogState, Store, omitted_line};
use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Logs followed live at once, over every open page: each costs a store
/// read every [`POLL`], so this bounds what followers cost the database.
/// Past it a follower is answered 503 and its page tries again later.
pub(crate) const MAX_FOLLOWERS: usize = 32;
/// How often a follower looks for new rows (the worker writes every 200 ms).
const POLL: Duration = Duration::from_millis(200);
/// How often a follower that found nothing new reads where the log stands.
const STATE_EVERY: Duration = Duration::from_secs(1);
/// A finished execution whose log has no total this long after (its worker
/// died before writing the last of it) is not waited for any longer.
const GIVE_UP_AFTER: Duration = Duration::from_secs(3);
/// At most this much output per event.
const EVENT_BYTES: usize = 256 * 1024;

#[derive(Template)]
#[template(path = "log_chunk.html")]
pub(crate) struct ChunkView {
    from: i64,
    next: i64,
    /// Nothing more will be written (the page stops following).
    complete: bool,
    /// The execution was running when this was read: the page says the
    /// log is followed live only then.
    running: bool,
    segs: Vec<Seg>,
}

/// A stretch of one line of one stream, or an omitted-bytes separator.
struct Seg {
    class: &'static str,
    parts: Vec<Part>,
}

/// Text as written, or an escape standing for a character that must not
/// act (`ctl`: styled apart, so it cannot pass for what the module wrote).
#[derive(Debug, PartialEq, Eq)]
struct Part {
    ctl: bool,
    text: String,
}

impl ChunkView {
    pub(crate) fn new(c: &Chunk, total: Option<i64>, running: bool) -> ChunkView {
        ChunkView {
            from: c.from,
            next: c.next,
            complete: c.complete(total),
            running,
            segs: segments(c),
        }
    }
}

fn gap(n: i64) -> Seg {
    Seg {
        class: "gap",
        parts: vec![Part {
            ctl: false,
            text: omitted_line(n).trim_end().to_string(),
        }],
    }
}

fn segments(c: &Chunk) -> Vec<Seg> {
    let mut segs = Vec::new();
    let mut bol = c.line_start;
    for p in &c.pieces {
        if p.omitted_before > 0 {
            segs.push(gap(p.omitted_before));
            bol = true;
        }
        let err = p.stream == "stderr";
        // A newline byte is never part of a multi-byte character.
        for line in p.data.split_inclusive(|b| *b == b'\n') {
            let class = match (err, bol) {
                (false, false) => "o",
                (false, true) => "o b",
                (true, false) => "e",
                (true, true) => "e b",
            };
            segs.push(Seg {
                class,
                parts: visible(line),
            });
            bol = line.ends_with(b"\n");
        }
    }
    if c.omitted_after > 0 {
        segs.push(gap(c.omitted_after));
    }
    segs
}

/// Module output as text that shows what was written and does nothing
/// else: newlines and tabs stay; other control characters (C0, DEL, C1)
/// and bytes that are not UTF-8 become `\x1b`, `\xff` (as `scheduler logs`
/// shows them on a terminal); the bidirectional controls that could reorder
/// a line become `\u{202e}`. Markup is left to askama. (Not the Unicode
/// control pictures such as `␛`: few monospace fonts have them.)
fn visible(bytes: &[u8]) -> Vec<Part> {
    let mut parts: Vec<Part> = Vec::new();
    let mut push = |ctl: bool, s: &str| match parts.last_mut() {
        Some(p) if p.ctl == ctl => p.text.push_str(s),
        _ => parts.push(Part {
            ctl,
            text: s.to_string(),
        }),
    };
    for chunk in bytes.utf8_chunks() {
        let mut plain = 0;
        let text = chunk.valid();
        for (i, c) in text.char_indices() {
            let escape = match c {
                '\n' | '\t' => None,
                c if c.is_control() => Some(format!("\\x{:02x}", c as u32)),
                '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                    Some(format!("\\u{{{:04x}}}", c as u32))
                }
                _ => None,
            };
            if let Some(e) = escape {
                if plain < i {
                    push(false, &text[plain..i]);
                }
                push(true, &e);
                plain = i + c.len_utf8();
            }
        }
        if plain < text.len() {
            push(false, &text[plain..]);
        }
        let mut bad = String::new();
        for b in chunk.invalid() {
            let _ = write!(bad, "\\x{b:02x}");
        }
        if !bad.is_empty() {
            push(true, &bad);
        }
    }
    parts
}

async fn resolve(
    state: &AppState,
    id: &str,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> Result<(LogParams, ExecKey, LogState), Problem> {
    let run_id = params::run_id(id)?;
    let Query(q) = q.map_err(|e| Problem::bad_request(format!("unreadable query string: {e}")))?;
    let p = q.parse()?;
    let (key, ls) = logs::target(state, run_id, p.step, p.attempt).await?;
    Ok((p, key, ls))
}

/// `/runs/{id}/log`: an HTML chunk (see the module comment).
pub(crate) async fn chunk(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> PageResult<Response> {
    let (p, key, ls) = resolve(&state, &id, q).await?;
    let store = &*state.store;
    let from = match p.from {
        Some(f) => f,
        None => logs::tail_start(store, key, p.to.or(ls.log_bytes))
            .await
            .map_err(Problem::from)?,
    };
    let w = Window {
        from,
        line_start: None,
        to: p.to,
        stream: p.stream,
        max_pieces: usize::MAX,
        // The tail of a log still written may have grown since it was
        // found; what is past this comes with the live stream.
        max_bytes: 2 * TAIL_BYTES as usize,
    };
    let c = logs::read(store, key, w, ls.log_bytes).await.map_err(Problem::from)?;
    Ok(super::html(&ChunkView::new(&c, ls.log_bytes, ls.state == "running"))?.into_response())
}

/// `/runs/{id}/log/download`: every recorded byte in order, both streams,
/// with a line where bytes were omitted, streamed a megabyte at a time.
///
/// `text/plain` without a charset: a log is lines of text, but its bytes
/// are whatever the module wrote, UTF-8 or not, and claiming `utf-8` would
/// be a lie for some of them; the attachment disposition has browsers save
/// it rather than render it.
pub(crate) async fn download(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> PageResult<Response> {
    let (_, key, ls) = resolve(&state, &id, q).await?;
    // Steps as the page and `scheduler logs --step` count them.
    let name = format!("{}-step{}-attempt{}.log", key.run_id, key.step + 1, key.attempt);
    let store = state.store.clone();
    let total = ls.log_bytes;
    let body = futures_util::stream::unfold(Some((0i64, true)), move |at| {
        let store = store.clone();
        async move {
            let (from, line_start) = at?;
            let w = Window {
                from,
                line_start: Some(line_start),
                to: None,
                stream: None,
                max_pieces: usize::MAX,
                max_bytes: 1024 * 1024,
            };
            match logs::read(&*store, key, w, total).await {
                Ok(c) if c.next > from => Some((Ok(Bytes::from(raw(&c))), Some((c.next, c.ends_line)))),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, %key, "a log download failed midway");
                    Some((Err(std::io::Error::other(e.to_string())), None))
                }
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// A chunk's bytes as the module wrote them, with the omitted-bytes line
/// (on a line of its own) where the record has a gap.
fn raw(c: &Chunk) -> Vec<u8> {
    let mut out = Vec::with_capacity(c.pieces.iter().map(|p| p.data.len()).sum::<usize>() + 64);
    let gap = |out: &mut Vec<u8>, bol: bool, n: i64| {
        if !bol {
            out.push(b'\n');
        }
        out.extend_from_slice(omitted_line(n).as_bytes());
    };
    let mut bol = c.line_start;
    for p in &c.pieces {
        if p.omitted_before > 0 {
            gap(&mut out, bol, p.omitted_before);
        }
        out.extend_from_slice(&p.data);
        bol = p.data.ends_with(b"\n");
    }
    if c.omitted_after > 0 {
        gap(&mut out, bol, c.omitted_after);
    }
    out
}

/// `/runs/{id}/log/events`: the live stream (see the module comment).
pub(crate) async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> PageResult<Response> {
    let (p, key, ls) = resolve(&state, &id, q).await?;
    // A browser reconnecting says where it got to.
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|n| *n >= 0);
    let permit = state.log_followers.clone().try_acquire_owned().map_err(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{MAX_FOLLOWERS} logs are followed live already, the most this UI serves at once; \
                 the page tries again shortly (or reload it)"
            ),
        )
    })?;
    let follow = Follow {
        store: state.store.clone(),
        key,
        next: resumed.or(p.from).unwrap_or(0),
        line_start: None,
        total: ls.log_bytes,
        running: ls.state == "running",
        finished_since: None,
        checked: Instant::now(),
        done: false,
        _permit: permit,
    };
    let events = futures_util::stream::unfold(follow, |mut f| async move {
        let event = f.next_event().await?;
        Some((Ok::<_, Infallible>(event), f))
    });
    Ok(Sse::new(events.take_until(state.shutdown.clone().cancelled_owned()))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// One follower: where it got to and what it knows of the log's end.
struct Follow {
    store: Arc<dyn Store>,
    key: ExecKey,
    next: i64,
    /// Whether `next` begins a line: known once this follower read up to it.
    line_start: Option<bool>,
    /// The log's final size, once its worker wrote the last of it.
    total: Option<i64>,
    /// The execution runs, as last read.
    running: bool,
    /// When the execution was first seen finished without a total.
    finished_since: Option<Instant>,
    /// When where the log stands was last read.
    checked: Instant,
    done: bool,
    /// Held while this follower lives (the [`MAX_FOLLOWERS`] bound).
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Follow {
    /// The next event; `None` once `end` was sent. Waits, polling, while
    /// nothing new is written.
    async fn next_event(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        loop {
            match self.poll().await {
                Ok(Some(event)) => return Some(event),
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, key = %self.key, "live log poll failed; retrying"),
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn poll(&mut self) -> anyhow::Result<Option<Event>> {
        loop {
            let w = Window {
                from: self.next,
                line_start: self.line_start,
                to: None,
                stream: None,
                max_pieces: usize::MAX,
                max_bytes: EVENT_BYTES,
            };
            let c = logs::read(&*self.store, self.key, w, self.total).await?;
            if c.next > self.next {
                self.next = c.next;
                self.line_start = Some(c.ends_line);
                let html = ChunkView::new(&c, self.total, self.running).render()?;
                let event = Event::default()
                    .event("log")
                    .id(c.next.to_string())
                    .retry(Duration::from_secs(1))
                    .data(html);
                return Ok(Some(event));
            }
            if c.complete(self.total) {
                return Ok(Some(self.end("complete")));
            }
            if self.checked.elapsed() < STATE_EVERY {
                return Ok(None);
            }
            self.checked = Instant::now();
            let k = self.key;
            let states = self.store.log_states(k.run_id).await?;
            let Some(s) = states
                .into_iter()
                .find(|s| s.step as u32 == k.step && s.attempt as u32 == k.attempt)
            else {
                return Ok(Some(self.end("gone")));
            };
            self.running = s.state == "running";
            if s.log_bytes.is_some() {
                // Read again knowing the end: the last rows, or a gap.
                self.total = s.log_bytes;
                continue;
            }
            if logs::finished(&s.state) {
                let Some(since) = self.finished_since else {
                    // Told once, so the page stops saying "live".
                    self.finished_since = Some(Instant::now());
                    return Ok(Some(Event::default().event("finished").data(s.state)));
                };
                if since.elapsed() >= GIVE_UP_AFTER {
                    return Ok(Some(self.end("incomplete")));
                }
            }
            return Ok(None);
        }
    }

    fn end(&mut self, why: &str) -> Event {
        self.done = true;
        Event::default().event("end").data(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::Piece;

    fn piece(pos: i64, stream: &str, data: &[u8], omitted_before: i64) -> Piece {
        Piece {
            pos,
            stream: stream.into(),
            at: chrono::Utc::now(),
            data: data.to_vec(),
            omitted_before,
        }
    }

    fn shown(bytes: &[u8]) -> Vec<(bool, String)> {
        visible(bytes).into_iter().map(|p| (p.ctl, p.text)).collect()
    }

    fn text(s: &str) -> (bool, String) {
        (false, s.to_string())
    }

    fn ctl(s: &str) -> (bool, String) {
        (true, s.to_string())
    }

    #[test]
    fn control_characters_and_stray_bytes_are_made_visible() {
        assert_eq!(shown(b"ok\tdone\n"), [text("ok\tdone\n")]);
        assert_eq!(
            shown(b"\x1b[31mred\x1b[0m\r\n"),
            [
                ctl("\\x1b"),
                text("[31mred"),
                ctl("\\x1b"),
                text("[0m"),
                ctl("\\x0d"),
                text("\n")
            ]
        );
        assert_eq!(
            shown("a\u{7f}b\u{202e}c\u{85}".as_bytes()),
            [
                text("a"),
                ctl("\\x7f"),
                text("b"),
                ctl("\\u{202e}"),
                text("c"),
                ctl("\\x85")
            ]
        );
        assert_eq!(
            shown(b"a\xff\xfeb\0"),
            [text("a"), ctl("\\xff\\xfe"), text("b"), ctl("\\x00")]
        );
        assert_eq!(shown("<é>".as_bytes()), [text("<é>")], "markup is askama's to escape");
    }

    #[test]
    fn lines_are_marked_where_they_begin_and_gaps_are_separators() {
        let c = Chunk {
            from: 10,
            next: 60,
            pieces: vec![
                piece(10, "stdout", b"tail of a line\nnext ", 0),
                piece(30, "stderr", b"oops\n", 0),
                piece(45, "stdout", b"after\n", 10),
            ],
            omitted_after: 9,
            line_start: false,
            ends_line: true,
        };
        let shown: Vec<_> = segments(&c)
            .into_iter()
            .map(|s| (s.class, s.parts.into_iter().map(|p| p.text).collect::<String>()))
            .collect();
        let expect: Vec<(&str, String)> = vec![
            ("o", "tail of a line\n".into()),
            ("o b", "next ".into()),
            ("e", "oops\n".into()),
            ("gap", "… 10 bytes omitted …".into()),
            ("o b", "after\n".into()),
            ("gap", "… 9 bytes omitted …".into()),
        ];
        assert_eq!(shown, expect);
        assert_eq!(
            String::from_utf8(raw(&c)).unwrap(),
            "tail of a line\nnext oops\n… 10 bytes omitted …\nafter\n… 9 bytes omitted …\n"
        );
    }

    #[test]
    fn a_gap_after_a_partial_line_starts_a_line_of_its_own_in_the_download() {
        let c = Chunk {
            from: 0,
            next: 20,
            pieces: vec![piece(0, "stdout", b"no newline", 0)],
            omitted_after: 10,
            line_start: true,
            ends_line: true,
        };
        assert_eq!(raw(&c), b"no newline\n\xe2\x80\xa6 10 bytes omitted \xe2\x80\xa6\n");
    }
}
