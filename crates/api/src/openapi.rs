//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers' annotations and the
//! views' types (utoipa), served at `GET /api/v1/openapi.json`.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use crate::handlers::{activity, antibot, orders, purchase, query};

/// The envelope of every JSON answer: `code` 0 and `data` on success.
#[derive(Serialize, ToSchema)]
pub(crate) struct Envelope<T> {
    /// 0 on success; otherwise the error code (see the codes table).
    code: i32,
    /// `"success"`, or why not.
    message: String,
    /// The answer.
    data: T,
}

/// An error answer: a code other than 0, the reason, and `data` null (or, for an unconfirmed
/// asynchronous purchase, its request id).
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorEnvelope {
    /// The error code: 40001 … 50304.
    #[schema(minimum = 40000, maximum = 59999)]
    code: i32,
    /// Why (names the field for 40001).
    message: String,
    /// Null, or details.
    data: Option<serde_json::Value>,
}

/// `GET /health`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok` or `unavailable`.
    status: String,
    /// `unreachable` when the inventory does not answer.
    inventory: Option<String>,
}

/// The error answers every route may give.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(crate) enum Errors {
    /// Malformed JSON, an invalid field or path parameter (code 40001).
    #[response(status = 400)]
    BadRequest(ErrorEnvelope),
    /// No valid bearer token (40101).
    #[response(status = 401)]
    Unauthenticated(ErrorEnvelope),
    /// Not allowed (40301 … 40306).
    #[response(status = 403)]
    Forbidden(ErrorEnvelope),
    /// Unknown product, order, request or route (40401 … 40404).
    #[response(status = 404)]
    NotFound(ErrorEnvelope),
    /// Method not allowed (40501).
    #[response(status = 405)]
    MethodNotAllowed(ErrorEnvelope),
    /// The body did not arrive in time (40801).
    #[response(status = 408)]
    Timeout(ErrorEnvelope),
    /// Sold out, already bought, sale started, order expired / cancelled / paid (40901 …).
    #[response(status = 409)]
    Conflict(ErrorEnvelope),
    /// Body too large (41301).
    #[response(status = 413)]
    TooLarge(ErrorEnvelope),
    /// Not `application/json` (41501).
    #[response(status = 415)]
    UnsupportedMediaType(ErrorEnvelope),
    /// The Idempotency-Key was used for another request (42201).
    #[response(status = 422)]
    KeyReused(ErrorEnvelope),
    /// Rate limited (42901); `Retry-After` says when to retry.
    #[response(status = 429, headers(("Retry-After" = u64, description = "seconds")))]
    RateLimited(ErrorEnvelope),
    /// Internal error (50001).
    #[response(status = 500)]
    Internal(ErrorEnvelope),
    /// Busy: degraded, queue full, a backend unavailable, or the outcome unknown (50301 …
    /// 50304); `Retry-After` says when to retry.
    #[response(status = 503, headers(("Retry-After" = u64, description = "seconds")))]
    Unavailable(ErrorEnvelope),
}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "auth.mode jwt: a token naming the buyer (sub) and its roles",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "seckill",
        description = "The seckill flash-sale HTTP API. Every JSON answer is the envelope {code, message, data}.",
        version = "1"
    ),
    paths(
        purchase::purchase,
        purchase::purchase_async,
        purchase::result,
        query::product_stats,
        query::purchased,
        orders::get,
        orders::pay,
        orders::cancel,
        antibot::challenge,
        antibot::token,
        query::health,
        activity::prewarm,
        query::system_stats,
        activity::degradation,
        activity::rate_limit_get,
        activity::rate_limit_set,
        query::metrics,
        openapi_json,
    ),
    components(schemas(ErrorEnvelope, Health)),
    modifiers(&Bearer),
    tags(
        (name = "buyers", description = "Purchases, results, orders, tokens"),
        (name = "operators", description = "The admin plane: prewarm, the levers, system stats, metrics")
    )
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the document serializes")
}

/// `GET /api/v1/openapi.json`: this document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "buyers",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = serde_json::Value)))]
pub(crate) async fn openapi_json() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        DOC.get_or_init(document).as_str(),
    )
        .into_response()
}
