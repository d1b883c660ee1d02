//! The Kafka record parser. A record that parses is a valid reading: finite,
//! non-negative, bounded power and a sane timestamp; and it survives a round trip.
#![no_main]

use edgemeter_wire::{Reading, POWER_W_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(reading) = Reading::decode(data) {
        assert!(reading.power_w.is_finite());
        assert!((0.0..=POWER_W_MAX).contains(&reading.power_w));
        assert_eq!(Reading::decode(&reading.encode()), Ok(reading));
    }
});
