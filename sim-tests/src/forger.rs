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

use crate::link::{CLOUD_HOST, DATA_PORT};
use crate::net::{call, connect};
use edgemeter_wire::{BatchRequest, TupleOut, WireVersion};
use std::time::Duration;
use tokio::time::{sleep_until, Instant};
use tracing::info;

pub const FORGER_HOST: &str = "forger";

/// How long the forger waits for the cloud's answer to one forgery.
pub const FORGERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Attempts per forgery while the cloud cannot be reached: enough to ride
/// out a short cloud crash, few enough to stay out of the run's way.
pub const FORGERY_ATTEMPTS_MAX: u32 = 5;

/// What the forger sends, and when (simulated ms from the start).
#[derive(Debug, Clone)]
pub struct ForgerPlan {
    pub edge_id: String,
    pub at_ms: Vec<u64>,
    pub tuples: Vec<TupleOut>,
}

/// The forger host's software. It sends its forgeries and then idles.
pub async fn run_forger(plan: ForgerPlan) -> turmoil::Result {
    let start = Instant::now();
    for (number, at_ms) in plan.at_ms.iter().enumerate() {
        sleep_until(start + Duration::from_millis(*at_ms)).await;
        let request = BatchRequest {
            version: WireVersion::V2,
            edge_id: plan.edge_id.clone(),
            instance: 0,
            request_id: number as u64 + 1,
            tuples: plan.tuples.clone(),
        };
        // The cloud's pipes carry an 8-byte request tag before the body.
        let mut frame = (u64::MAX - number as u64).to_be_bytes().to_vec();
        frame.extend_from_slice(&request.encode());
        for attempt in 1..=FORGERY_ATTEMPTS_MAX {
            let answer = match connect(CLOUD_HOST, DATA_PORT).await {
                Ok(mut stream) => call(&mut stream, &frame, FORGERY_TIMEOUT).await,
                Err(error) => Err(error),
            };
            match answer {
                Ok(reply) => {
                    let text = String::from_utf8_lossy(&reply[8.min(reply.len())..]);
                    let text: String = text.chars().take(80).collect();
                    info!(number, attempt, reply = %text, "forged unsealed batch answered");
                    break;
                }
                Err(error) => {
                    info!(number, attempt, %error, "forged unsealed batch not answered");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
    std::future::pending::<()>().await;
    Ok(())
}
