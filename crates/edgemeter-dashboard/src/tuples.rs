//! `GET /api/tuples?limit=N`: the latest tuples the cloud stored, newest
//! first, at most [`TUPLES_LIMIT_MAX`]. Also owns the `limit` parameter,
//! which `/api/data` shares.

use crate::cache_call;
use crate::{ApiError, DashboardState};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use edgemeter_cloud::{Cache, CloudTuple, GermanState};
use serde::{Deserialize, Serialize};

/// What the page's table shows when it asks for no particular number.
pub const TUPLES_LIMIT_DEFAULT: usize = 50;

/// The most tuples one call returns. The cache keeps a capped list of the
/// latest tuples, so a call costs at most this many reads however many are
/// stored; a thousand rows of JSON is about 250 KiB.
pub const TUPLES_LIMIT_MAX: usize = 1_000;

/// `?limit=N`, a count from 1 to the endpoint's maximum.
#[derive(Debug, Deserialize)]
pub struct LimitQuery {
    pub limit: Option<u64>,
}

/// One stored tuple as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TupleRow {
    pub key: String,
    pub edge_id: String,
    pub household_id: String,
    /// Start of the tuple's 5-second window, Unix ms; `null` for the
    /// original's requests, which carry no window.
    pub window_start_ms: Option<i64>,
    pub average_power_w: f64,
    pub samples: u32,
    pub postal_code: String,
    pub state: GermanState,
    /// When the cloud stored it, Unix ms.
    pub received_ms: i64,
}

impl From<CloudTuple> for TupleRow {
    fn from(tuple: CloudTuple) -> Self {
        TupleRow {
            key: tuple.key,
            edge_id: tuple.edge_id,
            household_id: tuple.node_id,
            window_start_ms: tuple.window_start_ms,
            average_power_w: tuple.average_w,
            samples: tuple.samples,
            postal_code: tuple.postal_code.as_str().to_owned(),
            state: tuple.state,
            received_ms: tuple.received_ms,
        }
    }
}

pub async fn get_tuples<C: Cache>(
    State(state): State<DashboardState<C>>,
    query: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Json<Vec<TupleRow>>, ApiError> {
    let limit = parse_limit(query, TUPLES_LIMIT_DEFAULT, TUPLES_LIMIT_MAX)?;
    let tuples = recent_tuples(state.cache.as_ref(), limit).await?;
    Ok(Json(tuples.into_iter().map(TupleRow::from).collect()))
}

/// The latest `limit` tuples, checking that the cache kept to the limit.
pub async fn recent_tuples<C: Cache>(cache: &C, limit: usize) -> Result<Vec<CloudTuple>, ApiError> {
    assert!(limit >= 1);
    assert!(limit <= TUPLES_LIMIT_MAX);
    let tuples = cache_call::bounded(cache.recent_tuples(limit)).await?;
    if tuples.len() > limit {
        return Err(ApiError::CacheInconsistent(format!(
            "asked for {limit} recent tuples, got {}",
            tuples.len()
        )));
    }
    Ok(tuples)
}

/// The limit asked for, or `default`; refuses 0, more than `max`, and
/// anything that is not a whole number.
pub fn parse_limit(
    query: Result<Query<LimitQuery>, QueryRejection>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    assert!(default >= 1);
    assert!(default <= max);
    let Query(query) = query.map_err(|rejection| {
        ApiError::BadRequest(format!(
            "`limit` must be a whole number from 1 to {max} ({})",
            rejection.body_text()
        ))
    })?;
    match query.limit {
        None => Ok(default),
        Some(limit) if limit >= 1 && limit <= max as u64 => Ok(limit as usize),
        Some(limit) => Err(ApiError::BadRequest(format!(
            "`limit` is {limit}; it must be from 1 to {max}"
        ))),
    }
}
