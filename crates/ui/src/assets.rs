//! The static files, compiled into the binary: the stylesheet, a few lines
//! of script, and the vendored htmx 2.0.4 and htmx-ext-sse 2.2.2 (htmx 4
//! changed the SSE syntax; stay on 2.x).

use crate::error::{PageError, Problem};
use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

const FILES: &[(&str, &str, &[u8])] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    ),
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/htmx.min.js"),
    ),
    (
        "htmx-ext-sse.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/htmx-ext-sse.js"),
    ),
];

pub(crate) async fn serve(Path(file): Path<String>) -> Result<Response, PageError> {
    let (_, mime, body) = FILES
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| Problem::not_found(format!("no asset named {file:?}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, *mime),
            // Not immutable: the names carry no hash, and an upgrade changes them.
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        *body,
    )
        .into_response())
}
