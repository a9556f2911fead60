//! The OpenAPI 3.1 document of `/api/v1`, served at `/api/v1/openapi.json`.
//!
//! It is not written by hand: `api::routes` registers every handler with
//! `utoipa_axum::routes!`, which adds the handler to the router and its
//! `#[utoipa::path]` (method, path, parameters, answers) to the document in
//! the same call, and every answer's schema is derived (`ToSchema`) from
//! the type the handler returns. A route cannot be served without being
//! described, and a field cannot change without its schema changing;
//! `tests/openapi.rs` checks both against the running app. This file holds
//! what is the document's own: its info, the token's security schemes, the
//! schema of a core type that carries no `ToSchema` (the core crate takes no
//! such dependency), and the handler that serves the document.

use axum::http::header;
use axum::response::IntoResponse;
use std::sync::LazyLock;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Where the API is mounted.
pub(crate) const PREFIX: &str = "/api/v1";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "scheduler JSON API",
        description = "Runs, their steps and logs, sequences, schedules, workers, queues, storage and \
                       alert deliveries, as recorded in PostgreSQL; and the operator's actions (start, retry, \
                       cancel, pause, resume).\n\n\
                       Every error is `{\"error\": \"<what to fix>\"}`: a 4xx for bad input (400 malformed, \
                       404 unknown, 409 not possible in the current state, 422 a definition that does not \
                       validate), a 5xx only when PostgreSQL or RabbitMQ is unavailable.\n\n\
                       When the UI has an access token (`--token`), every request needs it: \
                       `Authorization: Bearer <token>`, or the cookie `/login?token=<token>` sets. A POST \
                       must also prove it is not cross-site: a bearer token does, or the header \
                       `X-Requested-By: <anything>` (or `HX-Request: true`)."
    ),
    modifiers(&Security),
    tags(
        (name = "runs", description = "Runs, their executions and logs; retry and cancel."),
        (name = "sequences", description = "The project's sequences; starting a run."),
        (name = "schedules", description = "schedules.json and its record; pause and resume."),
        (name = "workers", description = "Workers and queues."),
        (name = "storage", description = "How much the record holds."),
        (name = "alerts", description = "Alert deliveries."),
        (name = "meta", description = "This document."),
    )
)]
pub(crate) struct ApiDoc;

/// The token, when the UI has one: as a bearer token (scripts) or the cookie
/// `/login` sets (browsers). Without a token the API is open (loopback
/// only), hence the empty alternative.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The UI's access token (`--token`), when it has one."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::COOKIE,
                "Set by `/login?token=<token>`.",
            ))),
        );
        use utoipa::openapi::security::SecurityRequirement;
        doc.security = Some(vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("cookie", Vec::<String>::new()),
            SecurityRequirement::default(),
        ]);
    }
}

/// Every error answer of the API.
#[derive(Debug, serde::Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong and what to do about it, in a sentence.
    pub error: String,
}

// The schema of `scheduler_core::Concurrency` as it serializes (`core`
// takes no OpenAPI dependency); the tests below hold it to the real type.
/// A sequence's concurrency policy.
#[derive(ToSchema)]
#[schema(as = Concurrency)]
#[allow(dead_code)]
pub(crate) struct ConcurrencySchema {
    /// At most this many runs of the sequence hold a slot (queued or
    /// running); absent: no limit.
    #[schema(minimum = 1)]
    max_concurrent: Option<u32>,
    on_conflict: OnConflictSchema,
}

/// What a run that finds no free slot does.
#[derive(ToSchema)]
#[schema(as = OnConflict)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum OnConflictSchema {
    Queue,
    QueueOne,
    Skip,
    CancelRunning,
}

/// The whole document, paths under [`PREFIX`].
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    crate::api::routes().into_openapi()
}

/// The answers `auth::guard` gives before any handler runs, added to every
/// operation (as the guard is to every route): 401 without the token when
/// the UI has one, 403 for a POST without the cross-site proof.
pub(crate) fn add_guard_answers(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let answer = |what: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                        .build(),
                )
                .build(),
        )
    };
    for item in doc.paths.paths.values_mut() {
        let ops = [
            (&mut item.get, false),
            (&mut item.head, false),
            (&mut item.post, true),
            (&mut item.put, true),
            (&mut item.patch, true),
            (&mut item.delete, true),
        ];
        for (op, writes) in ops {
            let Some(op) = op else { continue };
            let answers = &mut op.responses.responses;
            answers
                .entry("401".into())
                .or_insert_with(|| answer("The UI has an access token and the request does not carry it."));
            if writes {
                answers.entry("403".into()).or_insert_with(|| {
                    answer("Not provably from this origin: send `X-Requested-By: <anything>` (or a bearer token).")
                });
            }
        }
    }
}

/// Rendered once; it cannot change while the process runs.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| document().to_json().expect("the OpenAPI document serializes"));

/// This document (OpenAPI 3.1).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", content_type = "application/json", body = serde_json::Value))
)]
pub(crate) async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use scheduler_core::{Concurrency, OnConflict, RunState};

    fn enum_of<T: ToSchema>() -> Vec<String> {
        let schema = serde_json::to_value(T::schema()).unwrap();
        serde_json::from_value(schema["enum"].clone()).unwrap()
    }

    #[test]
    fn the_schemas_written_for_core_types_name_the_same_values() {
        let names = |all: &[(&str, OnConflict)]| all.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>();
        assert_eq!(enum_of::<OnConflictSchema>(), names(&OnConflict::ALL));
        for (name, c) in OnConflict::ALL {
            let json = serde_json::to_value(Concurrency {
                max_concurrent: Some(2),
                on_conflict: c,
            })
            .unwrap();
            assert_eq!(json, serde_json::json!({"max_concurrent": 2, "on_conflict": name}));
        }
        // No limit: the field is left out, which the schema allows.
        assert_eq!(
            serde_json::to_value(Concurrency::default()).unwrap(),
            serde_json::json!({"on_conflict": "queue"})
        );
        let states: Vec<String> = RunState::ALL.iter().map(|s| s.as_str().to_string()).collect();
        assert_eq!(enum_of::<crate::params::RunStateParam>(), states);
    }
}
