//! Route handlers and the request/response plumbing they share.

pub(crate) mod activity;
pub(crate) mod antibot;
pub(crate) mod orders;
pub(crate) mod purchase;
pub(crate) mod query;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use serde::Serialize;
use serde::de::DeserializeOwned;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use seckill_service::{Caller, ServiceError};

use crate::{ApiError, AppState};

/// The success envelope `{"code":0,"message":"success","data":…}`.
pub(crate) fn ok<T: Serialize>(status: StatusCode, data: &T) -> Response {
    envelope(status, 0, "success", data)
}

/// The response envelope with any code, message and data.
pub(crate) fn envelope<T: Serialize>(
    status: StatusCode,
    code: i32,
    message: &'static str,
    data: &T,
) -> Response {
    #[derive(Serialize)]
    struct Envelope<'a, T> {
        code: i32,
        message: &'static str,
        data: &'a T,
    }
    match serde_json::to_vec(&Envelope {
        code,
        message,
        data,
    }) {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            Bytes::from(body),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "serialising a response failed");
            ApiError::Service(ServiceError::Internal).into_response()
        }
    }
}

/// The success envelope (200) of a service answer, or its error.
pub(crate) fn answer<T: Serialize>(result: Result<T, ServiceError>) -> Response {
    match result {
        Ok(data) => ok(StatusCode::OK, &data),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Reads and parses a JSON body into `T`, naming the offending field among `fields`.
pub(crate) async fn json_body<T: DeserializeOwned>(
    state: &AppState,
    req: axum::extract::Request,
    fields: &[(&'static str, Kind, bool)],
) -> Result<(Caller, T), ApiError> {
    let (parts, body) = req.into_parts();
    let caller = caller(state, &parts)?;
    let bytes = read_body(&parts.headers, body, state.max_body_bytes).await?;
    Ok((caller, parse_json(&bytes, fields)?))
}

/// The JSON type a field must have, for error messages.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    PositiveInt,
    Number,
    String,
    Bool,
    Timestamp,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::PositiveInt => "must be a positive integer",
            Kind::Number => "must be a number",
            Kind::String => "must be a string",
            Kind::Bool => "must be true or false",
            Kind::Timestamp => "must be an RFC 3339 timestamp string",
        }
    }

    fn accepts(self, v: &serde_json::Value) -> bool {
        match self {
            Kind::PositiveInt => v.as_u64().is_some(),
            Kind::Number => v.is_number(),
            Kind::String | Kind::Timestamp => v.is_string(),
            Kind::Bool => v.is_boolean(),
        }
    }
}

/// Checks the content type and the size, then reads the body.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    require_json(headers)?;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
    }
    // Reads frame by frame and stops as soon as the body says it has ended, which for the usual
    // single-chunk body saves the poll that `collect` spends discovering the end.
    let mut body = Limited::new(body, limit);
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    loop {
        if http_body::Body::is_end_stream(&body) {
            break;
        }
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                ApiError::PayloadTooLarge(limit)
            } else {
                ApiError::invalid("could not read the request body")
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match &first {
            None => first = Some(data),
            Some(f) => {
                if rest.is_empty() {
                    rest.extend_from_slice(f);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(if rest.is_empty() {
        first.unwrap_or_default()
    } else {
        Bytes::from(rest)
    })
}

/// Parses a JSON body into `T`; on failure, names the offending field among `fields`
/// (name, kind, required).
pub(crate) fn parse_json<T: DeserializeOwned>(
    bytes: &[u8],
    fields: &[(&'static str, Kind, bool)],
) -> Result<T, ApiError> {
    // serde would read a struct from an array too; only objects are accepted.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(_) => ApiError::invalid("the body must be a JSON object"),
            Err(e) => ApiError::invalid(format!("malformed JSON: {e}")),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| diagnose(bytes, fields, &e))
}

fn diagnose(
    bytes: &[u8],
    fields: &[(&'static str, Kind, bool)],
    err: &serde_json::Error,
) -> ApiError {
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return ApiError::invalid(format!("malformed JSON: {e}")),
    };
    let Some(obj) = value.as_object() else {
        return ApiError::invalid("the body must be a JSON object");
    };
    for &(name, kind, required) in fields {
        match obj.get(name) {
            None | Some(serde_json::Value::Null) if required => {
                return ApiError::invalid(format!("missing field {name}"));
            }
            None | Some(serde_json::Value::Null) => {}
            Some(v) if !kind.accepts(v) => return ApiError::invalid_field(name, kind.describe()),
            Some(_) => {}
        }
    }
    ApiError::invalid(format!("invalid body: {err}"))
}

/// Parses a path segment as an id: a canonical positive integer (digits only, no leading zero)
/// below 2^63.
pub(crate) fn path_id(name: &str, raw: &str) -> Result<u64, ApiError> {
    let canonical = !raw.is_empty()
        && raw.len() <= 19
        && raw.bytes().all(|b| b.is_ascii_digit())
        && !raw.starts_with('0');
    match raw.parse::<u64>() {
        Ok(v) if canonical && v <= i64::MAX as u64 => Ok(v),
        _ => Err(ApiError::invalid_field(
            name,
            "must be a positive integer below 2^63",
        )),
    }
}

/// The caller of a request: its bearer token and peer address, through the service.
pub(crate) fn caller(s: &AppState, parts: &Parts) -> Result<Caller, ApiError> {
    let authorization = match parts.headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::Service(ServiceError::Unauthenticated(
                "the Authorization header must be \"Bearer <token>\"",
            ))
        })?),
    };
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    Ok(s.service.authenticate(authorization, peer)?)
}

/// Extracts the [`Caller`].
pub(crate) struct Auth(pub(crate) Caller);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        caller(s, parts).map(Auth)
    }
}

/// Path parameters, with a malformed one (bad percent-encoding, not UTF-8) answered in the
/// envelope like any invalid input.
pub(crate) struct Params<T>(pub(crate) T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, s).await {
            Ok(axum::extract::Path(v)) => Ok(Params(v)),
            Err(e) => Err(ApiError::invalid(format!("invalid path parameter: {e}"))),
        }
    }
}

/// Refuses a request whose content type is not JSON: state-changing routes without a body
/// take it as a marker, so a cross-site form post cannot reach them.
pub(crate) struct JsonOnly;

impl FromRequestParts<AppState> for JsonOnly {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        require_json(&parts.headers).map(|()| JsonOnly)
    }
}

/// State-changing routes take only JSON, so a cross-site form post cannot reach them.
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}
