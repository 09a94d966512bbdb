//! [`ApiError`]: every non-success answer of the API, mapped to a status and a stable code.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// Stable codes of the JSON envelope's `code` field. `0` is success.
pub mod codes {
    /// Success.
    pub const OK: i32 = 0;
    /// Malformed JSON or an invalid field (the message names it).
    pub const INVALID_REQUEST: i32 = 40001;
    /// The activity is not active.
    pub const INACTIVE: i32 = 40301;
    /// The sale has not started.
    pub const NOT_STARTED: i32 = 40302;
    /// The sale has ended.
    pub const ENDED: i32 = 40303;
    /// No activity for this product.
    pub const UNKNOWN_PRODUCT: i32 = 40401;
    /// No such order.
    pub const UNKNOWN_ORDER: i32 = 40402;
    /// No such asynchronous request (unknown or expired).
    pub const UNKNOWN_REQUEST: i32 = 40403;
    /// No such route.
    pub const NOT_FOUND: i32 = 40404;
    /// Wrong method for the route.
    pub const METHOD_NOT_ALLOWED: i32 = 40501;
    /// Sold out (fewer items left than asked for).
    pub const SOLD_OUT: i32 = 40901;
    /// This user already bought this product.
    pub const ALREADY_BOUGHT: i32 = 40902;
    /// Prewarm refused: the loaded activity's sale has started (send `"force": true`).
    pub const SALE_STARTED: i32 = 40903;
    /// Payment refused: the order's payment deadline passed (it is being cancelled).
    pub const ORDER_EXPIRED: i32 = 40904;
    /// The order was cancelled: it can no longer be paid.
    pub const ORDER_CANCELLED: i32 = 40905;
    /// The order was paid: it can no longer be cancelled.
    pub const ORDER_PAID: i32 = 40906;
    /// Body too large.
    pub const PAYLOAD_TOO_LARGE: i32 = 41301;
    /// Content type is not `application/json`.
    pub const UNSUPPORTED_MEDIA_TYPE: i32 = 41501;
    /// Rate limited (see `Retry-After`).
    pub const RATE_LIMITED: i32 = 42901;
    /// Internal error.
    pub const INTERNAL: i32 = 50001;
    /// Degraded: the service is shedding load.
    pub const DEGRADED: i32 = 50301;
    /// The request queue is full, or the wait in it timed out.
    pub const QUEUE_FULL: i32 = 50302;
    /// The inventory backend is unavailable (circuit open or failing).
    pub const BACKEND_UNAVAILABLE: i32 = 50303;
}

/// A request that did not succeed: a rejection or a failure, ready to become a response.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 400: malformed JSON or an invalid field.
    #[error("invalid request: {0}")]
    Invalid(Cow<'static, str>),
    /// 404 with a code.
    #[error("{message}")]
    NotFound {
        /// One of the 404 codes.
        code: i32,
        /// What was not found.
        message: &'static str,
    },
    /// 403: the activity does not sell now.
    #[error("{message}")]
    Forbidden {
        /// One of the 403 codes.
        code: i32,
        /// Why.
        message: &'static str,
    },
    /// 409 with a code.
    #[error("{message}")]
    Conflict {
        /// One of the 409 codes.
        code: i32,
        /// Why.
        message: &'static str,
    },
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 413.
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 415.
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    /// 429.
    #[error("rate limited")]
    RateLimited {
        /// Earliest useful retry.
        retry_after: Duration,
    },
    /// 503: shedding load; the message is the configured degradation message.
    #[error("{message}")]
    Busy {
        /// One of the 503 codes.
        code: i32,
        /// The configured `degradation.response_message`.
        message: Arc<str>,
        /// Earliest useful retry, when known.
        retry_after: Option<Duration>,
    },
    /// 500: details are logged, never sent.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// A 400 naming the field and the reason.
    pub fn invalid_field(field: &str, reason: &str) -> Self {
        Self::Invalid(Cow::Owned(format!("invalid {field}: {reason}")))
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The envelope's `code`.
    pub fn code(&self) -> i32 {
        match self {
            Self::Invalid(_) => codes::INVALID_REQUEST,
            Self::NotFound { code, .. }
            | Self::Forbidden { code, .. }
            | Self::Conflict { code, .. }
            | Self::Busy { code, .. } => *code,
            Self::MethodNotAllowed => codes::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge(_) => codes::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => codes::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => codes::RATE_LIMITED,
            Self::Internal => codes::INTERNAL,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => Some(*retry_after),
            Self::Busy { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Serialises `{"code":…,"message":…,"data":null}` without an intermediate value.
fn error_body(code: i32, message: &str) -> Bytes {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        code: i32,
        message: &'a str,
        data: (),
    }
    serde_json::to_vec(&Body {
        code,
        message,
        data: (),
    })
    .map(Bytes::from)
    .unwrap_or_else(|_| {
        Bytes::from_static(b"{\"code\":50001,\"message\":\"internal error\",\"data\":null}")
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The hottest rejections (a sold-out product under load) answer with a static body.
        let body = match &self {
            Self::Conflict {
                code: codes::SOLD_OUT,
                ..
            } => Bytes::from_static(b"{\"code\":40901,\"message\":\"sold out\",\"data\":null}"),
            Self::Conflict {
                code: codes::ALREADY_BOUGHT,
                ..
            } => {
                Bytes::from_static(b"{\"code\":40902,\"message\":\"already bought\",\"data\":null}")
            }
            Self::RateLimited { .. } => {
                Bytes::from_static(b"{\"code\":42901,\"message\":\"rate limited\",\"data\":null}")
            }
            other => error_body(other.code(), &other.to_string()),
        };
        let mut resp = (self.status(), body).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(ra) = self.retry_after() {
            // Whole seconds, rounded up, at least 1.
            let secs = ra.as_secs() + u64::from(ra.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.clamp(1, 3600)));
        }
        resp
    }
}
