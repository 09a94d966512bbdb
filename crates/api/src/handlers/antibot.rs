//! `GET /api/v1/seckill/challenge/{productId}` and `GET /api/v1/seckill/token/{productId}`: the
//! anti-bot challenge and the purchase token (`antibot` section).

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use seckill_service::{ChallengeAnswer, ServiceError};
use serde::{Deserialize, Serialize};

use super::{Auth, Params, answer, path_id};
use crate::{ApiError, AppState};

/// The product of the path and the query of both routes: in `auth.mode: none` the buyer is
/// named here, and the token route takes the answered challenge.
pub(crate) struct ProductQuery {
    product_id: u64,
    user_id: Option<u64>,
    challenge: Option<String>,
    solution: Option<String>,
}

#[derive(Deserialize)]
struct RawQuery {
    user_id: Option<u64>,
    challenge: Option<String>,
    solution: Option<String>,
}

impl FromRequestParts<AppState> for ProductQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        let Params(raw) = Params::<String>::from_request_parts(parts, s).await?;
        let product_id = path_id("productId", &raw)?;
        let Query(q) = Query::<RawQuery>::from_request_parts(parts, s)
            .await
            .map_err(|e| ApiError::invalid(format!("invalid query: {e}")))?;
        Ok(Self {
            product_id,
            user_id: q.user_id,
            challenge: q.challenge,
            solution: q.solution,
        })
    }
}

/// The answer, or 404 naming the switch that is off.
fn when_on<T: Serialize>(r: Result<Option<T>, ServiceError>, off: &'static str) -> Response {
    match r {
        Ok(Some(v)) => answer(Ok(v)),
        Ok(None) => ApiError::RouteNotFound(off).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[utoipa::path(get, path = "/api/v1/seckill/challenge/{product_id}", tag = "buyers", security((), ("bearer" = [])), params(("product_id" = u64, Path, minimum = 1), ("user_id" = Option<u64>, Query, description = "the buyer (auth.mode none)"), ("challenge" = Option<String>, Query), ("solution" = Option<String>, Query), ("x-request-id" = Option<String>, Header, description = "echoed; a fresh id when absent")),
    responses((status = 200, description = "A proof-of-work challenge", body = crate::openapi::Envelope<seckill_service::IssuedChallenge>), crate::openapi::Errors))]
/// A challenge to solve before asking for a purchase token.
pub(crate) async fn challenge(
    State(s): State<AppState>,
    Auth(caller): Auth,
    q: ProductQuery,
) -> Response {
    when_on(
        s.service.challenge(&caller, q.product_id, q.user_id).await,
        "the anti-bot challenge is off",
    )
}

#[utoipa::path(get, path = "/api/v1/seckill/token/{product_id}", tag = "buyers", security((), ("bearer" = [])), params(("product_id" = u64, Path, minimum = 1), ("user_id" = Option<u64>, Query, description = "the buyer (auth.mode none)"), ("challenge" = Option<String>, Query), ("solution" = Option<String>, Query), ("x-request-id" = Option<String>, Header, description = "echoed; a fresh id when absent")),
    responses((status = 200, description = "A single-use purchase token", body = crate::openapi::Envelope<seckill_service::IssuedToken>), crate::openapi::Errors))]
/// A single-use purchase token for the buyer and the product, from the sale's start.
pub(crate) async fn token(
    State(s): State<AppState>,
    Auth(caller): Auth,
    q: ProductQuery,
) -> Response {
    let answer = match (&q.challenge, &q.solution) {
        (Some(challenge), Some(solution)) => Some(ChallengeAnswer {
            challenge,
            solution,
        }),
        _ => None,
    };
    when_on(
        s.service
            .purchase_token(&caller, q.product_id, q.user_id, answer)
            .await,
        "purchase tokens are off",
    )
}
