//! From average power to energy and money over a year: the only arithmetic
//! the dashboard does, in one place so that `/api/states` and `/api/data`
//! cannot disagree.

/// 365 days × 24 h. A year's energy is the average power held this long.
pub const HOURS_PER_YEAR: f64 = 8_760.0;

pub const WATTS_PER_KILOWATT: f64 = 1_000.0;

/// The energy a constant `average_power_w` draws in a year, in kWh.
pub fn annual_kwh(average_power_w: f64) -> f64 {
    average_power_w * HOURS_PER_YEAR / WATTS_PER_KILOWATT
}

/// What that energy costs in a year at `price_eur_per_kwh`, in euros.
pub fn annual_cost_eur(average_power_w: f64, price_eur_per_kwh: f64) -> f64 {
    annual_kwh(average_power_w) * price_eur_per_kwh
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kilowatt_for_a_year() {
        assert_eq!(annual_kwh(1_000.0), 8_760.0);
        assert_eq!(annual_kwh(0.0), 0.0);
        assert!((annual_cost_eur(1_000.0, 0.30) - 2_628.0).abs() < 1e-9);
        assert_eq!(annual_cost_eur(500.0, 0.0), 0.0);
    }
}
