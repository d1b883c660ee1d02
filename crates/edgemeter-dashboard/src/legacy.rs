//! `GET /api/data`: the original dashboard's shape, so that an existing
//! client keeps working: a list of `{"key", "cityName", "powerAverage",
//! "cost"}`, one per stored tuple.
//!
//! Two of the original's bugs are gone: `cityName` is the household's state,
//! fixed by its postal code (the original drew a random state per key per
//! page load), and the list holds the latest [`DATA_ENTRIES_MAX`] tuples
//! rather than every key in Redis (`KEYS *` plus one `GET` per key).

use crate::energy::annual_cost_eur;
use crate::tuples::{parse_limit, recent_tuples, LimitQuery, TUPLES_LIMIT_MAX};
use crate::{ApiError, DashboardState};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use edgemeter_cloud::{Cache, CloudTuple};
use serde::Serialize;

/// The most entries one call returns, and the default: the original
/// returned everything, so a client gets as much as the bound allows unless
/// it asks for less with `?limit=N`.
pub const DATA_ENTRIES_MAX: usize = TUPLES_LIMIT_MAX;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyEntry {
    /// The tuple's cache key.
    pub key: String,
    /// The household's German state (the original's field name).
    pub city_name: String,
    /// The tuple's average power, in watts.
    pub power_average: f64,
    /// That power held for a year at the configured price, in euros: the
    /// same formula as `annual_cost_eur` in `/api/states`.
    pub cost: f64,
}

impl LegacyEntry {
    pub fn from_tuple(tuple: &CloudTuple, price_eur_per_kwh: f64) -> Self {
        LegacyEntry {
            key: tuple.key.clone(),
            city_name: tuple.state.name().to_owned(),
            power_average: tuple.average_w,
            cost: annual_cost_eur(tuple.average_w, price_eur_per_kwh),
        }
    }
}

pub async fn get_data<C: Cache>(
    State(state): State<DashboardState<C>>,
    query: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Json<Vec<LegacyEntry>>, ApiError> {
    let limit = parse_limit(query, DATA_ENTRIES_MAX, DATA_ENTRIES_MAX)?;
    let tuples = recent_tuples(state.cache.as_ref(), limit).await?;
    let price = state.price_eur_per_kwh;
    Ok(Json(
        tuples
            .iter()
            .map(|tuple| LegacyEntry::from_tuple(tuple, price))
            .collect(),
    ))
}
