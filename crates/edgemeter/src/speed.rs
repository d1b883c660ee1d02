//! `Speed`: how fast the households replay their readings, relative to the
//! time the readings were taken.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The fastest pacing factor accepted. Beyond it pacing sleeps would be
/// shorter than the timer's resolution; use `max` instead.
pub const SPEED_FACTOR_MAX: f64 = 1_000_000.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// Data time runs this many times faster than wall time: 1 is real
    /// time, 60 replays a minute of readings per second.
    Factor(f64),
    /// No pacing: each reading is published as soon as the bus takes it.
    Max,
}

impl Speed {
    /// The wall time after the replay's start at which a reading taken
    /// `data_offset_ms` after the first reading is due; `None` for `max`.
    pub fn due_after(self, data_offset_ms: i64) -> Option<Duration> {
        match self {
            Speed::Max => None,
            Speed::Factor(factor) => {
                let offset_ms = data_offset_ms.max(0) as f64 / factor;
                Some(Duration::from_secs_f64(offset_ms / 1000.0))
            }
        }
    }
}

impl FromStr for Speed {
    type Err = String;

    fn from_str(text: &str) -> Result<Speed, String> {
        if text.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        let factor: f64 = text
            .parse()
            .map_err(|_| format!("`{text}` is neither a number nor `max`"))?;
        if !(factor.is_finite() && factor > 0.0 && factor <= SPEED_FACTOR_MAX) {
            return Err(format!(
                "speed {text} is outside (0, {SPEED_FACTOR_MAX}]; use `max` for no pacing"
            ));
        }
        Ok(Speed::Factor(factor))
    }
}

impl fmt::Display for Speed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Speed::Max => f.write_str("max"),
            Speed::Factor(factor) => write!(f, "{factor}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_factors_and_max() {
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("MAX".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("60".parse::<Speed>(), Ok(Speed::Factor(60.0)));
        assert_eq!("0.5".parse::<Speed>(), Ok(Speed::Factor(0.5)));
        assert!("0".parse::<Speed>().is_err());
        assert!("-1".parse::<Speed>().is_err());
        assert!("NaN".parse::<Speed>().is_err());
        assert!("fast".parse::<Speed>().is_err());
        assert_eq!(
            SPEED_FACTOR_MAX.to_string().parse::<Speed>(),
            Ok(Speed::Factor(SPEED_FACTOR_MAX))
        );
        assert!((SPEED_FACTOR_MAX * 1.5)
            .to_string()
            .parse::<Speed>()
            .is_err());
        assert!("inf".parse::<Speed>().is_err());
    }

    #[test]
    fn scales_data_time_to_wall_time() {
        assert_eq!(
            Speed::Factor(1.0).due_after(2_000),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            Speed::Factor(60.0).due_after(60_000),
            Some(Duration::from_secs(1))
        );
        assert_eq!(Speed::Max.due_after(60_000), None);
        assert_eq!(Speed::Factor(2.0).due_after(-5), Some(Duration::ZERO));
    }
}
