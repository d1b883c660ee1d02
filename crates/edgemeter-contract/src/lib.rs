//! `edgemeter-contract` holds the contract suites: for each IO trait the
//! edge or the cloud is written against, the behaviours that every
//! implementation must show, written once, generic over a fixture that
//! makes the world around the implementation (a broker, a cloud) and
//! breaks it on request.
//!
//! The simulation replaces the adapters that cannot run inside turmoil
//! (rdkafka, NNG, Redis) with models. A model that disagrees with what deploys
//! makes the simulation prove the wrong system, so each suite runs twice:
//! once in `sim-tests` against the model, once in the `edgemeter` crate's
//! tests against the real adapter and a real server. Where the two
//! disagree, the model changes (`sim-tests/README.md` lists each case).
//!
//! # Layout
//! - [`bus`]: [`ReadingsBus`](edgemeter_edge::ReadingsBus): order within a
//!   partition, redelivery from the committed offset, an empty poll on
//!   silence, and what a stalled broker and a dead one look like.
//! - [`link`]: [`CloudLink`](edgemeter_edge::CloudLink): NNG's resends
//!   after a broken pipe and after the resend timer, a stalled connection
//!   (held, never redialled), heartbeats on their own channel.
//! - [`cache`]: [`Cache`](edgemeter_cloud::Cache): NX semantics, totals
//!   under resends, HINCRBYFLOAT's digits, a script that fails midway, and
//!   epochs set once and renewed after a loss; the simulated Redis (which
//!   runs the production Lua scripts) against `RedisCache` on a real
//!   `redis-server`.
//!
//! Behaviours never time the implementation: a bound they check is part
//! of the trait's own contract (a poll returns within
//! [`bus::POLL_RETURNS_WITHIN`], whatever the broker does), and every wait
//! is a bounded number of polls.

pub mod bus;
pub mod cache;
pub mod link;
