//! `GET /metrics` of the real edge and cloud, parsed as Prometheus would,
//! while the test drives each metric the issue names.
//!
//! Goal: every metric named in issue 16 is exported with its type and
//! moves when what it counts happens: the replay (readings counted, the
//! outbox filling and draining, round trips, the consumer lag rising and
//! falling back to 0), then one bad record, one late and one duplicate
//! reading, then Redis stopped (cache errors, a backlog that waits and
//! ages), then an unsealed request (a refusal) and a sealed resend (a
//! repeated tuple), then the edge's disk full (store errors). The
//! dashboard's `/api/edges` shows the backlog the edge's heartbeats report.
//!
//! Method: tansu, redis-server and the binary's `cloud`, `edge --metrics`
//! and `households` as processes on free loopback ports (see
//! `common::cluster`); `/metrics` fetched over plain HTTP and parsed with
//! `prometheus-parse`; records published with rdkafka; every wait is a
//! condition polled until a generous deadline, never a sleep.

mod common;

use common::cluster::{oracle, Cluster, DURATION_MS, EDGE_ID};
use common::{
    ask, edge_that_survives_file_limits, free_port, limit_file_size, wait_until, Process,
};
use edgemeter::metrics::{CLOUD_METRICS, EDGE_METRICS};
use edgemeter_wire::sealed::seal_request;
use edgemeter_wire::{BatchRequest, EdgeKey, Reading, TupleOut, WireVersion};
use prometheus_parse::{Sample, Value};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::time::Duration;

/// Long enough for any step on a loaded two-core machine.
const STEP_WITHIN: Duration = Duration::from_secs(180);

/// One plain HTTP/1.0 GET; the body, if the answer is 200 and, for
/// `/metrics`, in the text exposition format.
fn http_get(port: u16, path: &str) -> Result<String, String> {
    let (head, body) = common::http_get(port, path)?;
    if path == "/metrics"
        && !head
            .to_ascii_lowercase()
            .contains("text/plain; version=0.0.4")
    {
        return Err(format!("not the text format: {head}"));
    }
    Ok(body)
}

/// One scrape, parsed.
struct Scrape(Vec<Sample>);

impl Scrape {
    fn of(port: u16) -> Result<Scrape, String> {
        let text = http_get(port, "/metrics")?;
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))
            .map_err(|error| error.to_string())?;
        Ok(Scrape(parsed.samples))
    }

    /// The value of `name` with `label` (name, value), if exported. A
    /// counter must parse as a counter and a gauge as a gauge: the type
    /// lines are part of what is checked.
    fn get(&self, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
        let sample = self.0.iter().find(|sample| {
            sample.metric == name
                && label.is_none_or(|(key, value)| sample.labels.get(key) == Some(value))
        })?;
        match (&sample.value, name.ends_with("_total")) {
            (Value::Counter(value), true) => Some(*value),
            (Value::Gauge(value), false) => Some(*value),
            (Value::Untyped(value), false)
                if name.ends_with("_sum") || name.ends_with("_count") =>
            {
                Some(*value)
            }
            (other, _) => panic!("{name} has the wrong type: {other:?}"),
        }
    }

    fn value(&self, name: &str) -> f64 {
        self.get(name, None)
            .unwrap_or_else(|| panic!("{name} is not exported"))
    }

    fn labelled(&self, name: &str, key: &str, value: &str) -> f64 {
        self.get(name, Some((key, value)))
            .unwrap_or_else(|| panic!("{name}{{{key}={value:?}}} is not exported"))
    }

    fn readings(&self, outcome: &str) -> f64 {
        self.labelled("edgemeter_readings_total", "outcome", outcome)
    }

    fn outbox(&self, state: &str) -> f64 {
        self.labelled("edgemeter_outbox_tuples", "state", state)
    }

    fn refused(&self, reason: &str) -> f64 {
        self.labelled("edgemeter_cloud_requests_refused_total", "reason", reason)
    }

    fn round_trips(&self) -> Vec<(f64, f64)> {
        let sample = self
            .0
            .iter()
            .find(|sample| sample.metric == "edgemeter_batch_round_trip_seconds")
            .expect("the round-trip histogram is exported");
        let Value::Histogram(buckets) = &sample.value else {
            panic!("not a histogram: {:?}", sample.value)
        };
        buckets
            .iter()
            .map(|bucket| (bucket.less_than, bucket.count))
            .collect()
    }

    fn names(&self) -> Vec<&str> {
        self.0.iter().map(|sample| sample.metric.as_str()).collect()
    }
}

/// Waits until a scrape of `port` satisfies `condition`, and returns it.
fn scrape_until(port: u16, what: &str, condition: impl Fn(&Scrape) -> bool) -> Scrape {
    wait_until(what, STEP_WITHIN, || {
        Scrape::of(port).is_ok_and(|scrape| condition(&scrape))
    });
    Scrape::of(port).expect("it answered just now")
}

/// Publishes records to `power_topic` and waits until the broker has them.
fn publish(broker: &str, records: &[(&str, Vec<u8>)]) {
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .expect("a producer");
    for (key, payload) in records {
        producer
            .send(BaseRecord::to("power_topic").key(*key).payload(payload))
            .map_err(|(error, _)| error)
            .expect("queued");
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("the broker took the records");
}

/// Starts the cluster's edge with `--metrics` and SIGXFSZ ignored, so that
/// a file-size limit is an error it sees, as on a full disk.
fn edge_with_metrics(cluster: &Cluster, metrics_port: u16) -> Process {
    edge_that_survives_file_limits(
        cluster,
        &["--metrics".to_owned(), format!("127.0.0.1:{metrics_port}")],
    )
}

/// The it-edge row of the dashboard's `/api/edges`.
fn edge_row(http_port: u16) -> Result<serde_json::Value, String> {
    let rows: serde_json::Value =
        serde_json::from_str(&http_get(http_port, "/api/edges")?).map_err(|e| e.to_string())?;
    rows.as_array()
        .and_then(|rows| rows.iter().find(|row| row["edge_id"] == EDGE_ID))
        .cloned()
        .ok_or_else(|| "no row for the edge".to_owned())
}

fn probe_batch(request_id: u64) -> Vec<u8> {
    BatchRequest {
        version: WireVersion::V2,
        edge_id: EDGE_ID.to_owned(),
        instance: 0,
        request_id,
        tuples: vec![TupleOut {
            tuple_id: 1,
            node_id: "metrics-probe".to_owned(),
            window_start_ms: 0,
            average_w: 1.0,
            samples: 1,
        }],
    }
    .encode()
}

#[test]
fn every_metric_moves_as_the_edge_and_cloud_work() {
    let expected = oracle();
    let tuples = expected.len() as f64;
    let samples: u64 = expected
        .values()
        .map(|window| u64::from(window.samples))
        .sum();
    let (households, _) = edgemeter_data::load_dir(&common::data_dir(), Some(DURATION_MS))
        .expect("the shipped data loads");
    let mut cluster = Cluster::start();
    let _cloud = cluster.cloud();
    let metrics_port = free_port();
    let edge = edge_with_metrics(&cluster, metrics_port);
    let cloud_port = cluster.http_port;

    // Connected, nothing read yet.
    let idle = scrape_until(metrics_port, "the edge to connect", |scrape| {
        scrape.get("edgemeter_cloud_connected", None) == Some(1.0)
            && scrape
                .get("edgemeter_outbox_tuples", Some(("state", "acked")))
                .is_some()
    });
    for name in EDGE_METRICS {
        if name != "edgemeter_consumer_lag_records" {
            assert!(
                idle.names().iter().any(|got| got.starts_with(name)),
                "{name} missing"
            );
        }
    }
    assert_eq!(idle.readings("counted"), 0.0);
    assert_eq!(
        idle.outbox("queued") + idle.outbox("sent") + idle.outbox("acked"),
        0.0
    );
    assert_eq!(idle.value("edgemeter_batch_round_trip_seconds_count"), 0.0);
    let cloud = scrape_until(cloud_port, "the cloud to count the edge", |scrape| {
        scrape.get("edgemeter_cloud_edges_connected", None) == Some(1.0)
    });
    for name in CLOUD_METRICS {
        assert!(cloud.names().contains(&name), "{name} missing");
    }
    assert_eq!(cloud.value("edgemeter_cloud_tuples_stored_total"), 0.0);

    // The replay: the lag rises while windows are open, then every tuple
    // is acknowledged and the lag falls to 0.
    let mut replay = cluster.households("max");
    let lagging = scrape_until(metrics_port, "a consumer lag above 0", |scrape| {
        scrape
            .get("edgemeter_consumer_lag_records", None)
            .is_some_and(|lag| lag > 0.0)
    });
    println!(
        "consumer lag during the replay: {} records",
        lagging.value("edgemeter_consumer_lag_records")
    );
    assert!(
        replay.wait_exit(STEP_WITHIN).success(),
        "{}",
        replay.log_tail()
    );
    cluster.wait_for_acked(expected.len() as u64, STEP_WITHIN);
    let replayed = scrape_until(
        metrics_port,
        "the lag back at 0 and the outbox drained",
        |s| {
            s.get("edgemeter_consumer_lag_records", None) == Some(0.0)
                && s.get("edgemeter_outbox_tuples", Some(("state", "acked"))) == Some(tuples)
        },
    );
    assert_eq!(replayed.readings("counted"), samples as f64);
    let published: usize = households.iter().map(|h| h.readings.len()).sum();
    assert_eq!(
        replayed.readings("counted") + replayed.readings("duplicate"),
        published as f64,
        "every published reading is counted or a duplicate"
    );
    assert_eq!(
        (replayed.readings("late"), replayed.readings("rejected")),
        (0.0, 0.0)
    );
    assert_eq!(
        (replayed.outbox("queued"), replayed.outbox("sent")),
        (0.0, 0.0)
    );
    assert_eq!(
        replayed.value("edgemeter_outbox_oldest_unacked_seconds"),
        0.0
    );
    let trips = replayed.value("edgemeter_batch_round_trip_seconds_count");
    assert!(trips > 0.0);
    assert!(replayed.value("edgemeter_batch_round_trip_seconds_sum") > 0.0);
    let buckets = replayed.round_trips();
    assert_eq!(
        buckets.last().map(|bucket| bucket.1),
        Some(trips),
        "+Inf holds every trip"
    );
    assert!(
        buckets.windows(2).all(|pair| pair[0].1 <= pair[1].1),
        "cumulative"
    );
    assert_eq!(replayed.value("edgemeter_store_errors_total"), 0.0);
    let cloud = Scrape::of(cloud_port).unwrap();
    assert_eq!(cloud.value("edgemeter_cloud_tuples_stored_total"), tuples);
    assert_eq!(cloud.value("edgemeter_cloud_cache_errors_total"), 0.0);
    assert_eq!(cloud.refused("unsealed"), 0.0);
    wait_until(
        "the dashboard to show the reported backlog",
        STEP_WITHIN,
        || {
            edge_row(cloud_port).is_ok_and(|row| {
                row["backlog_tuples"] == 0 && row["queued_tuples"] == 0 && row["sent_tuples"] == 0
            })
        },
    );

    // One record of each other outcome; the duplicate pair opens a window
    // after the stream's end, which closes at the idle flush.
    let first = &households[0];
    let (first_ts, first_mw) = first.readings[0];
    let last_ts = households
        .iter()
        .filter_map(|household| household.readings.last().map(|reading| reading.0))
        .max()
        .unwrap();
    let reading = |ts_ms: i64| Reading {
        node_id: first.node_id.clone(),
        power_w: first_mw as f64 / 1000.0,
        ts_ms,
    };
    let later = reading(last_ts + 60_000).encode();
    publish(
        &cluster.tansu.address(),
        &[
            (&first.node_id, b"not json".to_vec()),
            (&first.node_id, reading(first_ts).encode()),
            (&first.node_id, later.clone()),
            (&first.node_id, later),
        ],
    );
    let outcomes = scrape_until(
        metrics_port,
        "one rejected, late and duplicate record",
        |s| {
            s.readings("rejected") == 1.0
                && s.readings("late") == 1.0
                && s.readings("duplicate") == replayed.readings("duplicate") + 1.0
        },
    );
    assert_eq!(outcomes.readings("counted"), samples as f64 + 1.0);

    // Redis stops: the new window is stored at the idle flush and waits,
    // ageing, while the cloud counts its failed writes.
    cluster.redis.stop();
    let waiting = scrape_until(
        metrics_port,
        "a tuple waiting for a cloud without Redis",
        |s| {
            s.outbox("queued") + s.outbox("sent") == 1.0
                && s.value("edgemeter_outbox_oldest_unacked_seconds") > 0.0
        },
    );
    assert_eq!(
        waiting.value("edgemeter_cloud_connected"),
        1.0,
        "heartbeats still answered"
    );
    scrape_until(cloud_port, "a cache error", |scrape| {
        scrape.value("edgemeter_cloud_cache_errors_total") > 0.0
    });
    // Back, empty: the edge ships everything again, the waiting tuple too.
    cluster.redis.restart();
    scrape_until(metrics_port, "the outbox drained again", |s| {
        s.outbox("queued") + s.outbox("sent") == 0.0 && s.outbox("acked") == tuples + 1.0
    });
    scrape_until(cloud_port, "the refill stored", |scrape| {
        scrape.value("edgemeter_cloud_tuples_stored_total") >= 2.0 * tuples + 1.0
    });

    // An unsealed request is refused; a sealed one sent twice is stored once.
    let refusal = ask(cluster.data_port, &probe_batch(1));
    assert!(
        refusal.starts_with(b"ERROR: unauthenticated"),
        "{refusal:?}"
    );
    let key = EdgeKey::from_hex(&"5a".repeat(32)).unwrap();
    let repeated_before = Scrape::of(cloud_port)
        .unwrap()
        .value("edgemeter_cloud_tuples_repeated_total");
    for request_id in [2, 3] {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let (sealed, _) = seal_request(EDGE_ID, &key, now_ms, &probe_batch(request_id));
        ask(cluster.data_port, &sealed);
    }
    let cloud = Scrape::of(cloud_port).unwrap();
    assert_eq!(cloud.refused("unsealed"), 1.0);
    assert_eq!(
        cloud.value("edgemeter_cloud_tuples_repeated_total"),
        repeated_before + 1.0
    );

    // The edge's disk fills: the store of the next record fails.
    let pid = edge.pid().expect("the edge runs");
    limit_file_size(pid, Some(0));
    publish(
        &cluster.tansu.address(),
        &[(&first.node_id, b"also not json".to_vec())],
    );
    scrape_until(metrics_port, "a store error", |scrape| {
        scrape.value("edgemeter_store_errors_total") > 0.0
    });
    limit_file_size(pid, None);
    scrape_until(
        metrics_port,
        "the record stored once the disk has room",
        |scrape| {
            scrape.readings("rejected") == 2.0
                && scrape.get("edgemeter_cloud_connected", None) == Some(1.0)
        },
    );
    // Nothing is exported that the lists (which the Grafana test reads) lack.
    for (port, names) in [
        (metrics_port, &EDGE_METRICS[..]),
        (cloud_port, &CLOUD_METRICS[..]),
    ] {
        let scrape = Scrape::of(port).unwrap();
        for got in scrape.names() {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| got.strip_suffix(suffix))
                .filter(|family| names.contains(family))
                .unwrap_or(got);
            assert!(names.contains(&family), "{got} is exported but not listed");
        }
    }
    // For the log of a passing run: what an operator's scrape looks like.
    println!("edge:\n{}", http_get(metrics_port, "/metrics").unwrap());
    println!("cloud:\n{}", http_get(cloud_port, "/metrics").unwrap());
}
