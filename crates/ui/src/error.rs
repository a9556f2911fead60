//! One error type for every handler: a status and a sentence that says what
//! to fix. The API answers it as `{"error": "..."}`, the pages as an error
//! page, and an htmx action as a flash message. Bad input is a 4xx; only an
//! unavailable dependency is a 5xx, and nothing here panics.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use scheduler_tracker::TrackerError;

#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub status: StatusCode,
    pub message: String,
}

impl Problem {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Problem {
        Problem {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> Problem {
        Problem::new(StatusCode::CONFLICT, message)
    }
    pub fn internal(message: impl Into<String>) -> Problem {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    pub fn no_run(id: uuid::Uuid) -> Problem {
        Problem::not_found(format!(
            "no run {id} is recorded; check the id (`scheduler runs` lists them)"
        ))
    }
}

impl From<TrackerError> for Problem {
    fn from(e: TrackerError) -> Problem {
        tracing::warn!(error = %e, "database error while serving a request");
        match e {
            TrackerError::Corrupt(_) => Problem::internal(e.to_string()),
            _ => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the database is unavailable: {e}"),
            ),
        }
    }
}

impl From<askama::Error> for Problem {
    fn from(e: askama::Error) -> Problem {
        tracing::error!(error = %e, "rendering a template failed");
        Problem::internal(format!("rendering the page failed: {e}"))
    }
}

/// A [`Problem`] answered as JSON.
#[derive(Debug)]
pub(crate) struct ApiError(pub Problem);

impl<T: Into<Problem>> From<T> for ApiError {
    fn from(p: T) -> ApiError {
        ApiError(p.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = crate::openapi::ErrorBody { error: self.0.message };
        (self.0.status, Json(body)).into_response()
    }
}

/// A [`Problem`] answered as a full page.
#[derive(Debug)]
pub(crate) struct PageError(pub Problem);

impl<T: Into<Problem>> From<T> for PageError {
    fn from(p: T) -> PageError {
        PageError(p.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let html = crate::pages::error_page(&self.0);
        (self.0.status, Html(html)).into_response()
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;
pub(crate) type PageResult<T> = Result<T, PageError>;
