//! `GET /api/states`: one row per German state, all 16 always, in
//! [`GermanState::ALL`] order, built from the cache's incremental totals.
//! A state with no households is a row of zeros, not a missing bar.

use crate::cache_call;
use crate::energy::{annual_cost_eur, annual_kwh};
use crate::{ApiError, DashboardState};
use axum::extract::State;
use axum::Json;
use edgemeter_cloud::{Cache, GermanState, StateTotals};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateRow {
    pub state: GermanState,
    pub households: u64,
    pub tuples: u64,
    /// The mean of the stored tuples' averages, in watts; 0 with no tuples.
    pub avg_power_w: f64,
    /// `avg_power_w` held for a year, in kWh.
    pub annual_kwh: f64,
    /// `annual_kwh` at the configured price, in euros.
    pub annual_cost_eur: f64,
}

pub async fn get_states<C: Cache>(
    State(state): State<DashboardState<C>>,
) -> Result<Json<Vec<StateRow>>, ApiError> {
    let totals = cache_call::bounded(state.cache.state_totals()).await?;
    Ok(Json(state_rows(&totals, state.price_eur_per_kwh)?))
}

/// The 16 rows, from whatever totals the cache holds. A state the cache
/// does not mention has no tuples yet; a state it mentions twice, or totals
/// that cannot be (tuples without a sum, households without tuples), are
/// the cache's bug and are reported as such rather than drawn.
pub fn state_rows(
    totals: &[StateTotals],
    price_eur_per_kwh: f64,
) -> Result<Vec<StateRow>, ApiError> {
    let mut found: [Option<&StateTotals>; GermanState::ALL.len()] = [None; 16];
    for total in totals {
        check_totals(total)?;
        let index = GermanState::ALL
            .iter()
            .position(|state| *state == total.state)
            .expect("ALL holds every state");
        if found[index].replace(total).is_some() {
            return Err(ApiError::CacheInconsistent(format!(
                "{} appears twice in the state totals",
                total.state
            )));
        }
    }
    let rows: Vec<StateRow> = GermanState::ALL
        .iter()
        .zip(found)
        .map(|(state, total)| row(*state, total, price_eur_per_kwh))
        .collect();
    assert_eq!(rows.len(), GermanState::ALL.len());
    Ok(rows)
}

fn row(state: GermanState, total: Option<&StateTotals>, price_eur_per_kwh: f64) -> StateRow {
    let (households, tuples, average_sum_w) = match total {
        Some(total) => (total.households, total.tuples, total.average_sum_w),
        None => (0, 0, 0.0),
    };
    let avg_power_w = if tuples == 0 {
        0.0
    } else {
        average_sum_w / tuples as f64
    };
    StateRow {
        state,
        households,
        tuples,
        avg_power_w,
        annual_kwh: annual_kwh(avg_power_w),
        annual_cost_eur: annual_cost_eur(avg_power_w, price_eur_per_kwh),
    }
}

fn check_totals(total: &StateTotals) -> Result<(), ApiError> {
    let broken = |what: &str| {
        Err(ApiError::CacheInconsistent(format!(
            "{}: {what} (households {}, tuples {}, sum {} W)",
            total.state, total.households, total.tuples, total.average_sum_w
        )))
    };
    if !total.average_sum_w.is_finite() || total.average_sum_w < 0.0 {
        return broken("the sum of averages is not a power");
    }
    if total.households > total.tuples {
        return broken("more households than tuples");
    }
    if total.tuples == 0 && total.average_sum_w != 0.0 {
        return broken("a sum without tuples");
    }
    if total.tuples > 0 && total.households == 0 {
        return broken("tuples without a household");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(state: GermanState, households: u64, tuples: u64, sum_w: f64) -> StateTotals {
        StateTotals {
            state,
            households,
            tuples,
            average_sum_w: sum_w,
        }
    }

    #[test]
    fn missing_states_are_zero_rows_in_fixed_order() {
        let rows = state_rows(&[totals(GermanState::Saarland, 2, 4, 1_000.0)], 0.5).unwrap();
        assert_eq!(rows.len(), 16);
        for (row, state) in rows.iter().zip(GermanState::ALL) {
            assert_eq!(row.state, state);
        }
        let saarland = rows
            .iter()
            .find(|row| row.state == GermanState::Saarland)
            .unwrap();
        assert_eq!(saarland.avg_power_w, 250.0);
        assert_eq!(saarland.annual_kwh, 2_190.0);
        assert_eq!(saarland.annual_cost_eur, 1_095.0);
        let bayern = &rows[1];
        assert_eq!(
            (bayern.tuples, bayern.avg_power_w, bayern.annual_cost_eur),
            (0, 0.0, 0.0)
        );
    }

    #[test]
    fn impossible_totals_are_refused() {
        let twice = [
            totals(GermanState::Berlin, 1, 1, 1.0),
            totals(GermanState::Berlin, 1, 1, 1.0),
        ];
        assert!(matches!(
            state_rows(&twice, 0.3),
            Err(ApiError::CacheInconsistent(_))
        ));
        for bad in [
            totals(GermanState::Berlin, 2, 1, 1.0),
            totals(GermanState::Berlin, 0, 0, 1.0),
            totals(GermanState::Berlin, 0, 3, 1.0),
            totals(GermanState::Berlin, 1, 1, f64::NAN),
            totals(GermanState::Berlin, 1, 1, -1.0),
        ] {
            assert!(
                state_rows(std::slice::from_ref(&bad), 0.3).is_err(),
                "{bad:?} passed"
            );
        }
    }
}
