//! `edgemeter-mosaik` speaks mosaik's low-level simulator API
//! (<https://mosaik.readthedocs.io>, API version 3) for
//! `edgemeter households --mosaik ADDR`, so that a mosaik co-simulation can
//! drive EdgeMeter's household replay and feed its own simulators' power
//! outputs into EdgeMeter, as the original system's `KafkaAdapter` did.
//!
//! # Layout
//! - [`frame`]: one message on the wire: a 4-byte big-endian length, then
//!   the JSON `[type, id, content]` (0 request, 1 success, 2 failure).
//! - [`simulator`]: the simulator's state: its two models (`Household`,
//!   `KafkaAdapter`), and what each call (`init`, `create`, `setup_done`,
//!   `step`, `get_data`, `stop`) answers and publishes.
//!
//! This crate performs no IO and reads no clock: the driver in the
//! `edgemeter` binary owns the TCP connection and the Kafka producer, and
//! publishes the readings each call returns, in order.

pub mod frame;
pub mod simulator;

pub use frame::{Message, MessageError, MESSAGE_BYTES_MAX};
pub use simulator::{Outcome, Simulator};
