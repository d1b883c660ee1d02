//! The `forger` host: a client on the network without the edge's key that
//! sends unsealed batches in the keyed edge's name, at the times the
//! scenario's `forgeries_at_ms` say. Seeds with forgeries run the cloud in
//! mixed mode (keys and `allow_unauthenticated` both on), where the cloud
//! must refuse them; the planted `unsealed-accepted-for-keyed-edge` bug
//! serves them, and the checker then sees the forged tuples in the cloud.
//!
//! Each forgery carries two tuples: one for a real window of the slice
//! with another average (stored first, it makes the edge's own tuple a
//! conflict) and one for a window past the slice, which the edge never
//! stores (the cloud holding it is unexpected whatever the order).
//!
//! On seeds that draw replays (`replays_at_ms`) it also presents a sealed
//! request captured a day ago: sealed with the edge's own key (the harness
//! has it; an eavesdropper would have the bytes), stamped a day before
//! the slice, carrying a tuple for a window of that day, which this run's
//! edge never stores. The cloud must refuse it as outside its seal
//! window; one that checks the window on one side only (the planted
//! `auth-window-one-side`) stores the tuple, and the checker sees it as
//! unexpected. Sealed requests need no mixed mode: replays alone leave the
//! cloud as it was.

use crate::link::{CLOUD_HOST, DATA_PORT};
use crate::net::{call, connect};
use edgemeter_wire::sealed::seal_request;
use edgemeter_wire::{BatchRequest, EdgeKey, TupleOut, WireVersion};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};
use tracing::info;

pub const FORGER_HOST: &str = "forger";

/// How long the forger waits for the cloud's answer to one forgery.
pub const FORGERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Attempts per forgery while the cloud cannot be reached: enough to ride
/// out a short cloud crash, few enough to stay out of the run's way.
pub const FORGERY_ATTEMPTS_MAX: u32 = 5;

/// How old the replayed request is: far outside any seal window (the
/// cloud's is 2 minutes), on the past side.
pub const REPLAY_AGE_MS: i64 = 24 * 3600 * 1000;

/// The request tags of replays start here, clear of the forgeries' (which
/// count down from `u64::MAX`) and of the edges' own.
const REPLAY_TAG_BASE: u64 = u64::MAX / 2;

/// A captured sealed request to present again.
#[derive(Debug, Clone)]
pub struct ReplayPlan {
    pub at_ms: Vec<u64>,
    pub key: EdgeKey,
    /// When the captured request was sealed (the edge's wall clock, ms).
    pub sent_ms: i64,
    pub tuples: Vec<TupleOut>,
}

/// What the forger sends, and when (simulated ms from the start).
#[derive(Debug, Clone)]
pub struct ForgerPlan {
    pub edge_id: String,
    pub at_ms: Vec<u64>,
    pub tuples: Vec<TupleOut>,
    pub replay: Option<ReplayPlan>,
}

/// What the cloud answered of the forger's requests, for the run's
/// coverage line: a forgery or a replay counts as reached only once the
/// cloud saw it, whatever it replied.
#[derive(Debug, Default)]
pub struct ForgerTally {
    pub forgeries_answered: AtomicU64,
    pub replays_answered: AtomicU64,
}

/// One request the forger presents: its frame and what it is, for the trace.
struct Presentation {
    at_ms: u64,
    number: usize,
    frame: Vec<u8>,
    what: &'static str,
    replay: bool,
}

impl ForgerPlan {
    /// Every request in the order of its time (forgeries first at a tie).
    fn presentations(&self) -> Vec<Presentation> {
        let mut out: Vec<Presentation> = self
            .at_ms
            .iter()
            .enumerate()
            .map(|(number, at_ms)| {
                let request = BatchRequest {
                    version: WireVersion::V2,
                    edge_id: self.edge_id.clone(),
                    instance: 0,
                    request_id: number as u64 + 1,
                    tuples: self.tuples.clone(),
                };
                // The cloud's pipes carry an 8-byte request tag before the body.
                let mut frame = (u64::MAX - number as u64).to_be_bytes().to_vec();
                frame.extend_from_slice(&request.encode());
                Presentation {
                    at_ms: *at_ms,
                    number,
                    frame,
                    what: "forged unsealed batch",
                    replay: false,
                }
            })
            .collect();
        if let Some(replay) = &self.replay {
            let request = BatchRequest {
                version: WireVersion::V2,
                edge_id: self.edge_id.clone(),
                instance: 0,
                request_id: 1,
                tuples: replay.tuples.clone(),
            };
            let (sealed, _) = seal_request(
                &self.edge_id,
                &replay.key,
                replay.sent_ms,
                &request.encode(),
            );
            for (number, at_ms) in replay.at_ms.iter().enumerate() {
                let mut frame = (REPLAY_TAG_BASE - number as u64).to_be_bytes().to_vec();
                frame.extend_from_slice(&sealed);
                out.push(Presentation {
                    at_ms: *at_ms,
                    number,
                    frame,
                    what: "replayed sealed batch",
                    replay: true,
                });
            }
        }
        // Stable: a seed without replays sends its forgeries as before.
        out.sort_by_key(|presentation| presentation.at_ms);
        out
    }
}

/// The forger host's software. It sends its requests and then idles.
pub async fn run_forger(plan: ForgerPlan, tally: Arc<ForgerTally>) -> turmoil::Result {
    let start = Instant::now();
    for presentation in plan.presentations() {
        let Presentation {
            at_ms,
            number,
            frame,
            what,
            replay,
        } = presentation;
        sleep_until(start + Duration::from_millis(at_ms)).await;
        for attempt in 1..=FORGERY_ATTEMPTS_MAX {
            let answer = match connect(CLOUD_HOST, DATA_PORT).await {
                Ok(mut stream) => call(&mut stream, &frame, FORGERY_TIMEOUT).await,
                Err(error) => Err(error),
            };
            match answer {
                Ok(reply) => {
                    let text = String::from_utf8_lossy(&reply[8.min(reply.len())..]);
                    let text: String = text.chars().take(80).collect();
                    info!(number, attempt, reply = %text, "{what} answered");
                    let answered = if replay {
                        &tally.replays_answered
                    } else {
                        &tally.forgeries_answered
                    };
                    answered.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(error) => {
                    info!(number, attempt, %error, "{what} not answered");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
    std::future::pending::<()>().await;
    Ok(())
}
