//! [`ApiError`]: every non-success answer of the HTTP API, mapped to a status and a stable code.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use seckill_service::{Refusal, ServiceError};

/// Stable codes of the JSON envelope's `code` field: the service's, and those only HTTP has.
pub mod codes {
    pub use seckill_service::codes::*;

    /// No such route.
    pub const NOT_FOUND: i32 = 40404;
    /// Wrong method for the route.
    pub const METHOD_NOT_ALLOWED: i32 = 40501;
    /// The request body did not arrive within `server.body_read_timeout`.
    pub const REQUEST_TIMEOUT: i32 = 40801;
    /// Body too large.
    pub const PAYLOAD_TOO_LARGE: i32 = 41301;
    /// Content type is not `application/json`.
    pub const UNSUPPORTED_MEDIA_TYPE: i32 = 41501;
}

/// A request that did not succeed, ready to become a response.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The service's answer.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// 404: no such route, or a disabled one.
    #[error("{0}")]
    RouteNotFound(&'static str),
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 408: the request body did not arrive in time.
    #[error("request body not received in time")]
    RequestTimeout,
    /// 413.
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 415.
    #[error("content type must be application/json")]
    UnsupportedMediaType,
}

impl ApiError {
    /// A 400 naming the field and the reason.
    pub fn invalid_field(field: &str, reason: &str) -> Self {
        Self::Service(ServiceError::invalid_field(field, reason))
    }

    /// A 400 with a message.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Service(ServiceError::Invalid(message.into().into()))
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Service(e) => match e {
                ServiceError::Invalid(_) => StatusCode::BAD_REQUEST,
                ServiceError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
                ServiceError::Denied(_) => StatusCode::FORBIDDEN,
                ServiceError::Refused(Refusal::IdempotencyKeyReused) => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                ServiceError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
                ServiceError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
                ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
                ServiceError::Refused(Refusal::Inactive | Refusal::NotStarted | Refusal::Ended) => {
                    StatusCode::FORBIDDEN
                }
                ServiceError::Refused(_) => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Self::RouteNotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    /// The envelope's `code`.
    pub fn code(&self) -> i32 {
        match self {
            Self::Service(e) => e.code(),
            Self::RouteNotFound(_) => codes::NOT_FOUND,
            Self::MethodNotAllowed => codes::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => codes::REQUEST_TIMEOUT,
            Self::PayloadTooLarge(_) => codes::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => codes::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Service(e) => e.retry_after(),
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
            Self::Service(ServiceError::Refused(Refusal::SoldOut)) => {
                Bytes::from_static(b"{\"code\":40901,\"message\":\"sold out\",\"data\":null}")
            }
            Self::Service(ServiceError::Refused(Refusal::AlreadyBought)) => {
                Bytes::from_static(b"{\"code\":40902,\"message\":\"already bought\",\"data\":null}")
            }
            Self::Service(ServiceError::RateLimited { .. }) => {
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
        if matches!(self, Self::Service(ServiceError::Unauthenticated(_))) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(ra) = self.retry_after() {
            // Whole seconds, rounded up, at least 1.
            let secs = ra.as_secs() + u64::from(ra.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.clamp(1, 3600)));
        }
        resp
    }
}
