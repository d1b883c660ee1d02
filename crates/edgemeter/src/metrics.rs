//! `GET /metrics` in the Prometheus text exposition format (version
//! 0.0.4): the cloud's on its HTTP port beside the dashboard, the edge's on
//! `--metrics ADDR` when given. This module owns the metric names, their
//! types, units and help texts, and the small HTTP server of the edge.
//!
//! The numbers live in the logic crates' atomics (`EdgeMonitor`, the
//! cloud's counters and heartbeat tracker) and in the Kafka adapter's
//! [`ConsumerLag`]; nothing here keeps a second copy. Each scrape reads
//! them through a [`Collector`] and encodes what it read.
//!
//! Why `prometheus-client` and not `metrics` with
//! `metrics-exporter-prometheus`: the former's collectors encode values
//! read at scrape time, a histogram's buckets included, so the edge's
//! IO-free round-trip histogram and the existing counters are exported as
//! they are. The latter records each event into its own global recorder:
//! every counter would be fed twice (or copied in with `absolute` before
//! each render), the histogram would need every sample pushed into the
//! exporter from the logic crates, and one global recorder per process does
//! not fit `demo`, which runs edge and cloud in one. `prometheus-client` is
//! also the Prometheus project's own client, and it writes the classic text
//! format as well as OpenMetrics.

use crate::command_error::CommandError;
use crate::dashboard_server::BoundedListener;
use crate::shutdown::Shutdown;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use edgemeter_cloud::{CloudCounters, RefusalReason};
use edgemeter_edge::EdgeMonitor;
use edgemeter_env::{SystemClock, WallClock};
use edgemeter_kafka::bus::ConsumerLag;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The media type of the text format, version 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The most scrape connections the edge's metrics server serves at once. A
/// Prometheus server keeps one; a few more leave room for an operator's
/// curl. Past it, connections wait in the kernel's backlog.
pub const METRICS_CONNECTIONS_MAX: usize = 8;

/// Every metric name the edge exports, as a query names it (a counter with
/// `_total`, a histogram by its family name).
pub const EDGE_METRICS: [&str; 8] = [
    "edgemeter_outbox_tuples",
    "edgemeter_outbox_oldest_unacked_seconds",
    "edgemeter_readings_total",
    "edgemeter_cloud_connected",
    "edgemeter_batch_round_trip_seconds",
    "edgemeter_batches_failed_total",
    "edgemeter_consumer_lag_records",
    "edgemeter_store_errors_total",
];

/// Every metric name the cloud exports.
pub const CLOUD_METRICS: [&str; 7] = [
    "edgemeter_cloud_tuples_stored_total",
    "edgemeter_cloud_tuples_repeated_total",
    "edgemeter_cloud_conflicts_total",
    "edgemeter_cloud_requests_refused_total",
    "edgemeter_cloud_cache_errors_total",
    "edgemeter_cloud_heartbeats_total",
    "edgemeter_cloud_edges_connected",
];

/// One gauge without labels.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: f64,
) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

/// One counter without labels; `name` without `_total`, which the encoder adds.
fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

/// A family of one label, one sample per value.
fn family(
    encoder: &mut DescriptorEncoder,
    (name, help, metric_type): (&str, &str, MetricType),
    label: &str,
    samples: &[(&str, u64)],
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (value, count) in samples {
        let labels = [(label, *value)];
        let sample = metric.encode_family(&labels)?;
        match metric_type {
            MetricType::Counter => ConstCounter::new(*count).encode(sample)?,
            _ => ConstGauge::new(*count as i64).encode(sample)?,
        }
    }
    Ok(())
}

/// The edge's metrics, read from its monitor and its bus at each scrape.
pub struct EdgeMetrics {
    pub monitor: Arc<EdgeMonitor>,
    /// The Kafka consumer's lag; `None` for a bus without one (the demo's
    /// in-process log).
    pub lag: Option<Arc<ConsumerLag>>,
}

impl fmt::Debug for EdgeMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdgeMetrics").finish_non_exhaustive()
    }
}

impl Collector for EdgeMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let counters = self.monitor.snapshot();
        // Unknown only until the edge's first heartbeat, right at start.
        if let Some(outbox) = counters.outbox {
            family(
                &mut encoder,
                (
                    "edgemeter_outbox_tuples",
                    "Tuples in the edge's outbox by delivery state.",
                    MetricType::Gauge,
                ),
                "state",
                &[
                    ("queued", outbox.queued),
                    ("sent", outbox.sent),
                    ("acked", outbox.acked),
                ],
            )?;
            let age_ms = outbox.oldest_unacked_age_ms(SystemClock.now_ms());
            gauge(
                &mut encoder,
                "edgemeter_outbox_oldest_unacked",
                "How long the oldest tuple not acknowledged by the cloud has waited (0 with none).",
                Some(&Unit::Seconds),
                age_ms as f64 / 1000.0,
            )?;
        }
        family(
            &mut encoder,
            (
                "edgemeter_readings",
                "Records read from Kafka, by what became of them.",
                MetricType::Counter,
            ),
            "outcome",
            &[
                ("counted", counters.counted),
                ("duplicate", counters.duplicates),
                ("late", counters.late),
                ("rejected", counters.rejected_invalid),
            ],
        )?;
        gauge(
            &mut encoder,
            "edgemeter_cloud_connected",
            "1 while the cloud answers the edge's heartbeats, else 0.",
            None,
            if counters.connected { 1.0 } else { 0.0 },
        )?;
        let trips = self.monitor.round_trips.snapshot();
        let metric = encoder.encode_descriptor(
            "edgemeter_batch_round_trip",
            "From sending a batch to the cloud's reply, for batches that got one.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        metric_histogram(metric, &trips)?;
        counter(
            &mut encoder,
            "edgemeter_batches_failed",
            "Batches that got no reply (timeout, or the cloud unreachable); each is sent again.",
            counters.batches_failed,
        )?;
        if let Some(records) = self.lag.as_ref().and_then(|lag| lag.records()) {
            gauge(
                &mut encoder,
                "edgemeter_consumer_lag_records",
                "Records on the broker past the edge's committed offsets, over its partitions.",
                None,
                records as f64,
            )?;
        }
        counter(
            &mut encoder,
            "edgemeter_store_errors",
            "SQLite operations of the edge that failed (a full disk, an IO error).",
            counters.store_errors,
        )
    }
}

fn metric_histogram(
    mut metric: prometheus_client::encoding::MetricEncoder,
    trips: &edgemeter_edge::RoundTripsSnapshot,
) -> fmt::Result {
    metric.encode_histogram::<NoLabelSet>(trips.sum_s, trips.count, &trips.buckets, None)
}

/// What the cloud's metrics read: its counters and how many edges are
/// connected. A closure, because the cloud is generic over its cache.
pub type CloudReading = Arc<dyn Fn() -> (CloudCounters, usize) + Send + Sync>;

/// The cloud's metrics, read at each scrape.
pub struct CloudMetrics {
    pub read: CloudReading,
}

impl fmt::Debug for CloudMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudMetrics").finish_non_exhaustive()
    }
}

impl Collector for CloudMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let (counters, edges_connected) = (self.read)();
        counter(
            &mut encoder,
            "edgemeter_cloud_tuples_stored",
            "Tuples stored in Redis for the first time.",
            counters.tuples_stored,
        )?;
        counter(
            &mut encoder,
            "edgemeter_cloud_tuples_repeated",
            "Tuples received again that Redis already held (resends, refills), not stored again.",
            counters.tuples_repeated,
        )?;
        counter(
            &mut encoder,
            "edgemeter_cloud_conflicts",
            "Resent tuples whose values differ from the stored ones; the stored ones are kept.",
            counters.conflicts,
        )?;
        let refused: Vec<(&str, u64)> = RefusalReason::ALL
            .iter()
            .map(|reason| (reason.name(), counters.refused_for(*reason)))
            .collect();
        family(
            &mut encoder,
            (
                "edgemeter_cloud_requests_refused",
                "Requests the cloud refused before reaching Redis, by reason.",
                MetricType::Counter,
            ),
            "reason",
            &refused,
        )?;
        counter(
            &mut encoder,
            "edgemeter_cloud_cache_errors",
            "Writes to Redis that failed; the edge was told to retry.",
            counters.cache_errors,
        )?;
        counter(
            &mut encoder,
            "edgemeter_cloud_heartbeats",
            "Heartbeats answered.",
            counters.heartbeats,
        )?;
        gauge(
            &mut encoder,
            "edgemeter_cloud_edges_connected",
            "Edges whose heartbeats are current.",
            None,
            edges_connected as f64,
        )
    }
}

/// A registry holding one collector.
pub fn registry(collector: impl Collector) -> Arc<Registry> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    Arc::new(registry)
}

/// The registry's metrics in the text format.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)
        .expect("writing to a String cannot fail");
    text
}

/// `GET /metrics` over `registry`.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move { ([(CONTENT_TYPE, TEXT_CONTENT_TYPE)], render(&registry)) }
        }),
    )
}

/// Binds `--metrics ADDR` at start, so that a busy port is an error
/// before the edge reads anything. Returns the bound address.
pub async fn bind(address: &str) -> Result<(TcpListener, SocketAddr), CommandError> {
    let listener = TcpListener::bind(address).await.map_err(|error| {
        CommandError::config(format!(
            "cannot serve metrics on {address}: {error}; pass another --metrics ADDR"
        ))
    })?;
    let bound = listener
        .local_addr()
        .map_err(|error| CommandError::config(format!("--metrics {address}: {error}")))?;
    Ok((listener, bound))
}

/// Serves `GET /metrics` on `listener` until shutdown.
pub fn serve(listener: TcpListener, registry: Arc<Registry>, shutdown: Shutdown) {
    tokio::spawn(async move {
        let listener = BoundedListener::new(listener, METRICS_CONNECTIONS_MAX);
        let served = axum::serve(listener, router(registry))
            .with_graceful_shutdown(shutdown.wait())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the metrics server stopped");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(text: &str) -> prometheus_parse::Scrape {
        prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).unwrap()
    }

    /// Goal: the cloud's text carries every name of [`CLOUD_METRICS`] with
    /// its type, a refusal sample for every reason, and the values given.
    /// Method: fixed counters rendered, parsed with a Prometheus parser.
    #[test]
    fn the_cloud_renders_every_metric_with_its_type() {
        let mut counters = CloudCounters {
            tuples_stored: 7,
            ..CloudCounters::default()
        };
        counters.refused[RefusalReason::ALL.len() - 1] = 3;
        let registry = registry(CloudMetrics {
            read: Arc::new(move || (counters, 2)),
        });
        let text = render(&registry);
        let parsed = scrape(&text);
        for name in CLOUD_METRICS {
            assert!(
                parsed.samples.iter().any(|sample| sample.metric == name),
                "{name} missing:\n{text}"
            );
        }
        let value = |name: &str, label: Option<&str>| {
            parsed
                .samples
                .iter()
                .find(|sample| {
                    sample.metric == name
                        && label.is_none_or(|l| sample.labels.get("reason") == Some(l))
                })
                .map(|sample| sample.value.clone())
        };
        use prometheus_parse::Value;
        assert_eq!(
            value("edgemeter_cloud_tuples_stored_total", None),
            Some(Value::Counter(7.0))
        );
        assert_eq!(
            value("edgemeter_cloud_requests_refused_total", Some("malformed")),
            Some(Value::Counter(3.0))
        );
        assert_eq!(
            value("edgemeter_cloud_edges_connected", None),
            Some(Value::Gauge(2.0))
        );
        let reasons = parsed
            .samples
            .iter()
            .filter(|sample| sample.metric == "edgemeter_cloud_requests_refused_total")
            .count();
        assert_eq!(reasons, RefusalReason::ALL.len());
    }
}
