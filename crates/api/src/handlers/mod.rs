//! Route handlers and the request/response plumbing they share.

pub(crate) mod activity;
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

use seckill_service::ServiceError;

use crate::ApiError;

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
    state: &crate::AppState,
    req: axum::extract::Request,
    fields: &[(&'static str, Kind, bool)],
) -> Result<(axum::http::request::Parts, T), ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, state.max_body_bytes).await?;
    Ok((parts, parse_json(&bytes, fields)?))
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
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
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

/// Parses a path segment as a positive id.
pub(crate) fn path_id(name: &str, raw: &str) -> Result<u64, ApiError> {
    match raw.parse::<u64>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(ApiError::invalid_field(name, "must be a positive integer")),
    }
}
