//! `POST /api/v1/seckill/activity/prewarm` and the operators' degradation lever.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use seckill_inventory::{Activity, ActivityStatus, InventoryError, PrewarmOutcome};
use serde::{Deserialize, Serialize};

use super::{Kind, ok, parse_json, read_body};
use crate::ApiError;
use crate::error::codes;
use crate::state::AppState;
use crate::{LimitAlgorithm, RateLimitSettings, Settings};

/// Highest accepted price.
const MAX_PRICE: f64 = 1e10;

#[derive(Deserialize)]
struct PrewarmBody {
    product_id: u64,
    product_name: String,
    price: f64,
    stock: u64,
    start_time: String,
    end_time: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    per_user_limit: Option<u64>,
    #[serde(default)]
    force: bool,
}

const FIELDS: &[(&str, Kind, bool)] = &[
    ("product_id", Kind::PositiveInt, true),
    ("product_name", Kind::String, true),
    ("price", Kind::Number, true),
    ("stock", Kind::PositiveInt, true),
    ("start_time", Kind::Timestamp, true),
    ("end_time", Kind::Timestamp, true),
    ("status", Kind::String, false),
    ("per_user_limit", Kind::PositiveInt, false),
    ("force", Kind::Bool, false),
];

fn timestamp(field: &str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ApiError::invalid_field(field, "must be an RFC 3339 timestamp"))
}

fn activity(b: PrewarmBody) -> Result<(Activity, bool), ApiError> {
    if !b.price.is_finite() || b.price < 0.0 || b.price > MAX_PRICE {
        return Err(ApiError::invalid_field(
            "price",
            "must be a number between 0 and 10000000000",
        ));
    }
    let status = match b.status.as_deref() {
        None | Some("active") => ActivityStatus::Active,
        Some("inactive") => ActivityStatus::Inactive,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "status",
                "must be \"active\" or \"inactive\"",
            ));
        }
    };
    let per_user_limit = match b.per_user_limit {
        None => 1,
        Some(n) => u32::try_from(n).unwrap_or(0),
    };
    let a = Activity {
        product_id: b.product_id,
        product_name: b.product_name,
        price_cents: (b.price * 100.0).round() as u64,
        stock: b.stock,
        start_time: timestamp("start_time", &b.start_time)?,
        end_time: timestamp("end_time", &b.end_time)?,
        status,
        per_user_limit,
    };
    a.validate().map_err(|e| match e {
        InventoryError::InvalidActivity { field, reason } => {
            ApiError::invalid_field(field, &reason)
        }
        _ => ApiError::Internal,
    })?;
    Ok((a, b.force))
}

#[derive(Serialize)]
struct Prewarmed {
    product_id: u64,
    epoch: u64,
    result: &'static str,
    stock: u64,
}

/// Loads an activity into the inventory before its sale.
pub(crate) async fn prewarm(State(state): State<AppState>, req: Request) -> Response {
    let s = &*state.0;
    let result = async {
        let (parts, body) = req.into_parts();
        let bytes = read_body(&parts.headers, body, s.settings.max_body_bytes).await?;
        let (activity, force) = activity(parse_json(&bytes, FIELDS)?)?;
        let outcome = s.inventory.prewarm(&activity, force).await.map_err(|e| {
            tracing::error!(error = %e, product_id = activity.product_id, "prewarm failed");
            s.flow.busy(codes::BACKEND_UNAVAILABLE)
        })?;
        let (epoch, result) = match outcome {
            PrewarmOutcome::Created { epoch } => (epoch, "created"),
            PrewarmOutcome::Unchanged { epoch } => (epoch, "unchanged"),
            PrewarmOutcome::Replaced { epoch } => (epoch, "replaced"),
            PrewarmOutcome::SaleStarted => {
                return Err(ApiError::Conflict {
                    code: codes::SALE_STARTED,
                    message: "the activity's sale has started; send \"force\": true to replace it",
                });
            }
        };
        tracing::info!(
            product_id = activity.product_id,
            epoch,
            result,
            "activity prewarmed"
        );
        Ok(ok(
            StatusCode::OK,
            &Prewarmed {
                product_id: activity.product_id,
                epoch,
                result,
                stock: activity.stock,
            },
        ))
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct DegradationBody {
    mode: String,
}

#[derive(Serialize)]
struct DegradationView {
    mode: &'static str,
    degraded: bool,
}

/// The operators' lever: `{"mode": "on" | "off" | "auto"}`.
pub(crate) async fn degradation(State(state): State<AppState>, req: Request) -> Response {
    let s = &*state.0;
    let result = async {
        let (parts, body) = req.into_parts();
        let bytes = read_body(&parts.headers, body, s.settings.max_body_bytes).await?;
        let b: DegradationBody = parse_json(&bytes, &[("mode", Kind::String, true)])?;
        let (forced, mode) = match b.mode.as_str() {
            "on" => (Some(true), "on"),
            "off" => (Some(false), "off"),
            "auto" => (None, "auto"),
            _ => {
                return Err(ApiError::invalid_field(
                    "mode",
                    "must be \"on\", \"off\" or \"auto\"",
                ));
            }
        };
        s.flow.degradation().set_forced(forced);
        tracing::warn!(mode, "degradation mode set by an operator");
        Ok(ok(
            StatusCode::OK,
            &DegradationView {
                mode,
                degraded: forced.unwrap_or(false),
            },
        ))
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct RateLimitBody {
    enable: bool,
    requests_per_second: Option<u64>,
    burst_size: Option<u64>,
    algorithm: Option<String>,
}

#[derive(Serialize)]
struct RateLimitView {
    enable: bool,
    algorithm: Option<&'static str>,
    requests_per_second: Option<u32>,
    burst_size: Option<u32>,
}

fn rate_limit_view(s: Option<RateLimitSettings>) -> RateLimitView {
    RateLimitView {
        enable: s.is_some(),
        algorithm: s.as_ref().map(|s| match s.algorithm {
            LimitAlgorithm::TokenBucket => "token_bucket",
            LimitAlgorithm::SlidingWindow => "sliding_window",
            LimitAlgorithm::FixedWindow => "fixed_window",
        }),
        requests_per_second: s.as_ref().map(|s| s.requests_per_second.get()),
        burst_size: s.as_ref().map(|s| s.burst_size.get()),
    }
}

/// `GET /api/v1/system/rate-limit`: the global limit in force.
pub(crate) async fn rate_limit_get(State(state): State<AppState>) -> Response {
    ok(
        StatusCode::OK,
        &rate_limit_view(state.0.flow.global_limit()),
    )
}

/// `POST /api/v1/system/rate-limit`: the operators' lever to tighten or relax the global limit
/// at run time, `{"enable": true, "requests_per_second": 200, "burst_size": 400}` (omitted
/// fields keep their current or configured values) or `{"enable": false}`. Per instance.
pub(crate) async fn rate_limit_set(State(state): State<AppState>, req: Request) -> Response {
    let s = &*state.0;
    let result = async {
        let (parts, body) = req.into_parts();
        let bytes = read_body(&parts.headers, body, s.settings.max_body_bytes).await?;
        let b: RateLimitBody = parse_json(
            &bytes,
            &[
                ("enable", Kind::Bool, true),
                ("requests_per_second", Kind::PositiveInt, false),
                ("burst_size", Kind::PositiveInt, false),
                ("algorithm", Kind::String, false),
            ],
        )?;
        let next = if b.enable {
            let base = s
                .flow
                .global_limit()
                .or(s.settings.rate_limit)
                .unwrap_or_else(|| Settings::default().rate_limit.expect("a default limit"));
            let positive = |v: Option<u64>, field: &str, current: std::num::NonZeroU32| match v {
                None => Ok(current),
                Some(v) => u32::try_from(v)
                    .ok()
                    .and_then(std::num::NonZeroU32::new)
                    .ok_or_else(|| {
                        ApiError::invalid_field(field, "must be between 1 and 4294967295")
                    }),
            };
            let algorithm = match b.algorithm.as_deref() {
                None => base.algorithm,
                Some("token_bucket") => LimitAlgorithm::TokenBucket,
                Some("sliding_window") => LimitAlgorithm::SlidingWindow,
                Some("fixed_window") => LimitAlgorithm::FixedWindow,
                Some(_) => {
                    return Err(ApiError::invalid_field(
                        "algorithm",
                        "must be \"token_bucket\", \"sliding_window\" or \"fixed_window\"",
                    ));
                }
            };
            Some(RateLimitSettings {
                algorithm,
                requests_per_second: positive(
                    b.requests_per_second,
                    "requests_per_second",
                    base.requests_per_second,
                )?,
                burst_size: positive(b.burst_size, "burst_size", base.burst_size)?,
            })
        } else {
            None
        };
        s.flow.set_global_limit(next);
        tracing::warn!(limit = ?next, "global rate limit set by an operator");
        Ok(ok(StatusCode::OK, &rate_limit_view(next)))
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}
