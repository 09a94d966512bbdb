//! `GET /api/v1/seckill/challenge/{productId}` and `GET /api/v1/seckill/token/{productId}`: the
//! anti-bot challenge and the purchase token (`antibot` section).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use seckill_service::ChallengeAnswer;
use serde::Deserialize;

use super::{Auth, Params, answer, path_id};
use crate::{ApiError, AppState};

/// The query of both routes: in `auth.mode: none` the buyer is named here.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TokenQuery {
    user_id: Option<u64>,
    challenge: Option<String>,
    solution: Option<String>,
}

fn query(
    q: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<TokenQuery, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::invalid(format!("invalid query: {e}")))
}

/// A challenge to solve before asking for a purchase token.
pub(crate) async fn challenge(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Params(raw): Params<String>,
    q: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        let product_id = path_id("productId", &raw)?;
        let q = query(q)?;
        s.service
            .challenge(&caller, product_id, q.user_id)
            .await?
            .ok_or(ApiError::RouteNotFound("the anti-bot challenge is off"))
    };
    match result.await {
        Ok(c) => answer(Ok(c)),
        Err(e) => e.into_response(),
    }
}

/// A single-use purchase token for the buyer and the product, from the sale's start.
pub(crate) async fn token(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Params(raw): Params<String>,
    q: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        let product_id = path_id("productId", &raw)?;
        let q = query(q)?;
        let answer = match (&q.challenge, &q.solution) {
            (Some(challenge), Some(solution)) => Some(ChallengeAnswer {
                challenge,
                solution,
            }),
            _ => None,
        };
        s.service
            .purchase_token(&caller, product_id, q.user_id, answer)
            .await?
            .ok_or(ApiError::RouteNotFound("purchase tokens are off"))
    };
    match result.await {
        Ok(t) => answer(Ok(t)),
        Err(e) => e.into_response(),
    }
}
