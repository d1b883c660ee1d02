//! Serves the dashboard over the cloud's in-memory cache, filled with made-up
//! readings, for working on the page and for the browser test while no
//! `edgemeter demo` is at hand:
//!
//! ```text
//! cargo run -p edgemeter-dashboard --example serve -- [--addr 127.0.0.1:5006] [--empty]
//! ```
//!
//! By default three edges report 40 households, and new readings arrive
//! every 2 s so the page can be seen refreshing; `edge-gamma` stops
//! heartbeating, to show a disconnected edge. `--empty` serves a cache that
//! stays empty, to show the page's "no data yet" state; `--down` serves a
//! cache that refuses every call, as a stopped Redis does, to show how the
//! page reports a 503.

#[path = "../tests/support/fixture.rs"]
mod fixture;
#[allow(dead_code)]
#[path = "../tests/support/outage_cache.rs"]
mod outage_cache;

use edgemeter_cloud::{Cache, MemoryCache};
use edgemeter_dashboard::{router, DashboardState, EdgeLink, EdgeLinks};
use fixture::{household_id, tuple, FIXTURE_EDGES};
use outage_cache::{Outage, OutageCache};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The cloud's in-memory cache, with a switch to make it refuse calls.
type ExampleCache = OutageCache<MemoryCache>;

/// Households the example invents, spread over [`FIXTURE_EDGES`].
const HOUSEHOLDS: usize = 40;
/// Windows already stored at start, per household.
const WINDOWS_AT_START: usize = 6;
/// How often a new window's readings arrive.
const ARRIVAL_INTERVAL_MS: u64 = 2_000;
/// Windows added while running, so a forgotten example stops growing.
const WINDOWS_ADDED_MAX: usize = 10_000;
const ADDRESS_DEFAULT: &str = "127.0.0.1:5006";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// A plausible household average in watts: a base load per household plus a
/// swing per window, in quarter watts like the test fixture.
fn average_w(household: usize, window: usize) -> f64 {
    let base = 80.0 + (household * 53 % 400) as f64;
    let swing = ((household * 37 + window * 11) % 160) as f64 * 0.25;
    base + swing
}

/// The start of the 5-second window that ended most recently.
fn last_window_start_ms(now_ms: i64) -> i64 {
    now_ms - now_ms.rem_euclid(5_000) - 5_000
}

/// One window's readings for every household; `gamma_quiet` leaves out the
/// edge that has gone quiet.
async fn store_window(
    cache: &ExampleCache,
    window: usize,
    window_start_ms: i64,
    gamma_quiet: bool,
) {
    let now = now_ms();
    let tuples: Vec<_> = (0..HOUSEHOLDS)
        .map(|household| (household, FIXTURE_EDGES[household % FIXTURE_EDGES.len()]))
        .filter(|(_, edge)| !(gamma_quiet && *edge == "edge-gamma"))
        .map(|(household, edge)| {
            tuple(
                edge,
                &household_id(household),
                window_start_ms,
                average_w(household, window),
                now,
            )
        })
        .collect();
    if let Err(error) = cache.store(&tuples, 1).await {
        tracing::warn!(%error, "example readings not stored");
        return;
    }
    for edge in FIXTURE_EDGES {
        if !(gamma_quiet && edge == "edge-gamma") {
            if let Err(error) = cache.record_heartbeat(edge, 0, now, 1).await {
                tracing::warn!(%error, "example heartbeat not stored");
            }
        }
    }
}

/// The windows before start, oldest first; `edge-gamma` misses the last two.
async fn fill(cache: &ExampleCache) {
    let latest_ms = last_window_start_ms(now_ms());
    for window in 0..WINDOWS_AT_START {
        let behind = (WINDOWS_AT_START - 1 - window) as i64;
        store_window(
            cache,
            window,
            latest_ms - behind * 5_000,
            window + 2 >= WINDOWS_AT_START,
        )
        .await;
    }
}

/// A new window every [`ARRIVAL_INTERVAL_MS`]; a window that was already
/// stored (two arrivals within one 5-second window) is not counted again.
async fn arrive(cache: Arc<ExampleCache>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(ARRIVAL_INTERVAL_MS));
    for window in WINDOWS_AT_START..WINDOWS_AT_START + WINDOWS_ADDED_MAX {
        ticker.tick().await;
        store_window(&cache, window, last_window_start_ms(now_ms()), true).await;
    }
}

fn edge_links() -> EdgeLinks {
    Arc::new(|| {
        vec![
            EdgeLink {
                edge_id: "edge-alpha".into(),
                connected: true,
                backlog: Some(edgemeter_wire::Backlog {
                    queued: 240,
                    sent: 64,
                    oldest_unacked_age_ms: 95_000,
                }),
            },
            EdgeLink {
                edge_id: "edge-beta".into(),
                connected: true,
                backlog: Some(edgemeter_wire::Backlog::default()),
            },
            EdgeLink {
                edge_id: "edge-gamma".into(),
                connected: false,
                backlog: None,
            },
        ]
    })
}

struct Options {
    address: SocketAddr,
    empty: bool,
    down: bool,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        address: ADDRESS_DEFAULT.parse().expect("a fixed address"),
        empty: false,
        down: false,
    };
    let mut arguments = std::env::args().skip(1);
    while let Some(argument) = arguments.next() {
        match argument.as_str() {
            "--addr" => {
                let text = arguments.next().ok_or("--addr needs an address")?;
                options.address = text
                    .parse()
                    .map_err(|error| format!("--addr {text}: {error}"))?;
            }
            "--empty" => options.empty = true,
            "--down" => options.down = true,
            other => {
                return Err(format!(
                    "unknown argument {other}; use [--addr ADDR] [--empty] [--down]"
                ))
            }
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_target(false).init();
    let options = options()?;
    let cache = Arc::new(OutageCache::new(MemoryCache::new()));
    if !options.empty {
        fill(&cache).await;
    }
    if options.down {
        let reason = "connection refused (the example was started with --down)";
        cache.set_outage(Some(Outage::Unavailable(reason.into())));
    } else if !options.empty {
        tokio::spawn(arrive(Arc::clone(&cache)));
    }
    let listener = tokio::net::TcpListener::bind(options.address).await?;
    let address = listener.local_addr()?;
    let variant = match (options.empty, options.down) {
        (_, true) => ", cache down",
        (true, false) => ", empty",
        (false, false) => "",
    };
    tracing::info!("dashboard at http://{address} (in-memory example data{variant})");
    let app = router(DashboardState::new(cache, edge_links()));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
