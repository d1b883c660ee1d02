//! Window arithmetic, shared by the edge, the replay and the oracle.
//!
//! Windows are 5 seconds of event time, aligned to multiples of 5 s since the
//! Unix epoch. Sums are kept in integer milliwatts, so an average does not
//! depend on the order its readings arrived in: the edge's result and this
//! oracle's (`edgemeter-checker`) are equal to the bit, not merely close.

pub const WINDOW_MS: i64 = 5_000;

pub fn window_start_ms(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(WINDOW_MS) * WINDOW_MS
}

/// Watts to integer milliwatts, the data set's own resolution.
pub fn milliwatts(power_w: f64) -> i64 {
    (power_w * 1000.0).round() as i64
}

/// The average of `samples` readings summing to `sum_mw`, in watts.
pub fn average_w(sum_mw: i64, samples: u32) -> f64 {
    assert!(samples > 0);
    sum_mw as f64 / f64::from(samples) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_align_to_five_seconds_of_epoch() {
        assert_eq!(window_start_ms(1_577_145_601_982), 1_577_145_600_000);
        assert_eq!(window_start_ms(1_577_145_605_000), 1_577_145_605_000);
        assert_eq!(window_start_ms(-1), -5_000);
    }
}
