//! The command line: one subcommand per role, each with its own `--help`.
//!
//! Only parsing lives here; each subcommand's behaviour is in
//! [`crate::commands`]. These definitions are the one list of flags:
//! [`crate::settings`] makes each of them a key of the config file and an
//! environment variable too, so a new flag is one field here.

use crate::speed::Speed;
use clap::{Args, Parser, Subcommand};
use edgemeter_kafka::bus::TOPIC;
use edgemeter_nng::cloud_nodes::{parse_cloud_list, CloudList};
use edgemeter_nng::setup::{DATA_PORT_DEFAULT, HEARTBEAT_PORT_DEFAULT};
use edgemeter_wire::ReadingForm;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// The longest `--duration` accepted: a year of readings is more than any
/// data set we ship, and bounds the arithmetic.
pub const DURATION_MAX: Duration = Duration::from_secs(366 * 24 * 3600);

/// The most partitions `--partitions` may name. A site reads a handful;
/// the bound keeps a runaway list (a pasted range) from assigning more
/// partitions than a broker would give one consumer.
pub const PARTITIONS_LISTED_MAX: usize = 1024;

#[derive(Debug, Parser)]
#[command(
    name = "edgemeter",
    version,
    about = "Household power readings from the edge to the cloud: households -> Kafka -> edge -> NNG -> cloud -> Redis.",
    long_about = "Household power readings from the edge to the cloud.\n\n\
        households replays the data set into Kafka; edge averages each household over \
        5-second windows, keeps the averages in SQLite and ships them to the cloud over NNG; \
        cloud stores them in Redis and answers with each household's postal code. \
        demo runs all three in one process without Kafka or Redis.\n\n\
        Every flag may also come from a config file (--config FILE, TOML: a top-level \
        `log` and one table per subcommand, keyed by the flag names in snake_case) or from \
        an environment variable EDGEMETER_<FLAG>; flags override the environment, which \
        overrides the file. `edgemeter config check --config FILE` shows the effective settings."
)]
pub struct Cli {
    /// Log filter in tracing's EnvFilter syntax, e.g. `info` or `edgemeter=debug,warn`.
    /// Logs go to stderr. Also `log` at the top of the config file, or EDGEMETER_LOG.
    #[arg(long, global = true, default_value = "info")]
    pub log: String,

    /// The TOML config file: a top-level `log` and one table per subcommand
    /// (`[edge]`, `[cloud]`, ...) whose keys are the flags' long names in
    /// snake_case, e.g. `idle_flush = "60s"`. Environment variables and
    /// flags override it.
    #[arg(long, global = true, value_name = "FILE", env = "EDGEMETER_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay the household readings into Kafka, paced by their timestamps.
    Households(HouseholdsArgs),
    /// Consume readings, average them over 5-second windows into SQLite, ship them to the cloud.
    Edge(EdgeArgs),
    /// Answer heartbeats and data requests over NNG; store tuples in Redis.
    Cloud(CloudArgs),
    /// Households, edge and cloud in one process: in-process bus and cache, real NNG and SQLite.
    Demo(DemoArgs),
    /// Print how many tuples of an edge database are queued, sent, acknowledged and rejected,
    /// and whether the edge running on it consumes or has paused.
    Status(StatusArgs),
    /// Make a secret key for an edge: writes the edge's key file and prints
    /// the line to add to the cloud's keys file.
    Keygen(KeygenArgs),
    /// Work with config files: `config check` validates one and prints the
    /// effective settings.
    Config(ConfigArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub action: ConfigAction,
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate --config FILE (every table in it, or the one named) and print
    /// the effective settings after the environment's overrides, secrets
    /// masked; exits non-zero, naming each problem, on a bad file.
    Check(ConfigCheckArgs),
}

#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    /// Check and show only this subcommand's settings (with the environment
    /// it would see), even if the file has no table for it.
    #[arg(long = "for", value_name = "SUBCOMMAND", value_parser = clap::builder::PossibleValuesParser::new(crate::settings::SECTIONS))]
    pub section: Option<String>,

    /// The file to check: the global --config, filled in after parsing.
    #[arg(skip)]
    pub file: Option<PathBuf>,
}

impl Cli {
    /// Hands the global `--config` to `config check`, which reads it itself.
    pub fn fill_config_check(&mut self, file: Option<PathBuf>) {
        if let Command::Config(ConfigArgs {
            action: ConfigAction::Check(check),
        }) = &mut self.command
        {
            check.file = file;
        }
    }
}

/// The cloud's HTTP side: the REST API and the dashboard.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Serve the REST API and the dashboard on this address (port 0: a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5006")]
    pub http: String,

    /// The electricity price the dashboard's annual costs use, in EUR per kWh.
    #[arg(long, value_name = "EUR", default_value_t = 0.30)]
    pub price_eur_per_kwh: f64,

    /// The dashboard's page directory [default: web/ of the working
    /// directory, else of the checkout the binary was built from, else
    /// /usr/share/edgemeter/web, where the edgemeter-cloud package puts it].
    #[arg(long, value_name = "DIR")]
    pub web_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The edge the key is for.
    #[arg(long, value_name = "ID", value_parser = parse_id)]
    pub edge_id: String,

    /// Where to write the edge's key (created with mode 0600; never overwritten).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Which readings to replay.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Directory of household CSVs, one `<household id>.csv[.gz]` each
    /// [default: data/gem-house-1h, found from the working directory or the
    /// workspace the binary was built in].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,

    /// Replay only the readings within D of the data set's first reading,
    /// e.g. `90s`, `10m`, `1h`, `1h30m` [default: all of them].
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

/// Where the cloud's NNG sockets are.
#[derive(Debug, Args)]
pub struct PortArgs {
    /// The cloud's heartbeat port (NNG req/rep).
    #[arg(long, value_name = "P", default_value_t = HEARTBEAT_PORT_DEFAULT)]
    pub heartbeat_port: u16,

    /// The cloud's data port (NNG req/rep).
    #[arg(long, value_name = "P", default_value_t = DATA_PORT_DEFAULT)]
    pub data_port: u16,
}

#[derive(Debug, Args)]
pub struct HouseholdsArgs {
    /// Kafka bootstrap broker(s): HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka: String,

    /// The topic to publish to.
    #[arg(long, value_name = "NAME", default_value = TOPIC)]
    pub topic: String,

    #[command(flatten)]
    pub data: DataArgs,

    /// Pacing: 1 = real time, 60 = a minute of readings per second, `max` = no pacing.
    /// Ignored with --mosaik, where mosaik's steps pace the replay.
    #[arg(long, value_name = "X|max", default_value = "1")]
    pub speed: Speed,

    /// Run as a mosaik simulator: dial mosaik at ADDR (its `%(addr)s`) and
    /// publish each household's readings when mosaik time reaches them.
    /// Models: `Household` (one per household of the data set, in id order)
    /// and `KafkaAdapter` (publishes any connected simulator's `power`, W).
    #[arg(long, value_name = "HOST:PORT")]
    pub mosaik: Option<String>,
}

#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// Kafka bootstrap broker(s): HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka: String,

    /// The topic to consume.
    #[arg(long, value_name = "NAME", default_value = TOPIC)]
    pub topic: String,

    /// Consume only these partitions of --topic, e.g. `0,1`: several edges
    /// (sites) then share one topic, each with its own partitions and its
    /// own consumer group [default: every partition].
    #[arg(long, value_name = "P[,P...]", value_parser = parse_partitions)]
    pub partitions: Option<BTreeSet<i32>>,

    /// The producers' record form: `edgemeter` (ours: watts and a `ts`
    /// field) or `original` (the original system's mosaik KafkaAdapter:
    /// `household_<id>`, milliwatts, timed by the Kafka record's timestamp).
    #[arg(long, value_name = "FORM", default_value = "edgemeter", value_parser = parse_reading_form)]
    pub readings: ReadingForm,

    /// The cloud node(s): `HOST` (on --heartbeat-port and --data-port) or
    /// `HOST:HEARTBEAT_PORT:DATA_PORT`, comma-separated for several nodes,
    /// e.g. `c1,c2:7000:7001` (IPv6 with ports: `[::1]:7000:7001`). Data
    /// goes to any node that answers; the edge is connected while one does.
    #[arg(long, value_name = "ADDR[,ADDR...]", value_parser = parse_cloud_list)]
    pub cloud: CloudList,

    // The ports of every `--cloud` node given without ports of its own.
    #[command(flatten)]
    pub ports: PortArgs,

    /// The edge's SQLite database (created if missing). A restarted edge
    /// resumes from it.
    #[arg(long, value_name = "PATH")]
    pub db: PathBuf,

    /// This edge's name: its consumer group is `edgemeter-<ID>`, and the
    /// cloud keys its tuples by it. Letters, digits, `.`, `_`, `-`.
    #[arg(long, value_name = "ID", default_value = "edge-1", value_parser = parse_id)]
    pub edge_id: String,

    /// This edge's key file (64 hex digits, from `edgemeter keygen`), read
    /// again on SIGHUP; also EDGEMETER_KEY_FILE or its older name
    /// EDGEMETER_EDGE_KEY_FILE. The key may instead come from the
    /// environment variable EDGEMETER_EDGE_KEY (never from a flag). Without
    /// a key the edge's requests are unauthenticated, which a cloud serves
    /// only with --allow-unauthenticated.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// How long the stream must be quiet before the open windows are
    /// closed, once the broker confirms every partition is read to its end.
    /// A producer that pauses for less changes no average. E.g. `60s`, `2m`.
    #[arg(long, value_name = "D", default_value = "60s", value_parser = parse_duration)]
    pub idle_flush: Duration,
    /// How long acknowledged tuples are kept (e.g. 7d, 36h). Within it, a
    /// cloud whose Redis lost its data is refilled from this edge; older
    /// tuples are deleted and cannot be.
    #[arg(long, value_name = "D", default_value = "7d", value_parser = parse_duration)]
    pub ack_retention: Duration,

    /// Serve Prometheus metrics on `http://ADDR/metrics` (e.g.
    /// 127.0.0.1:9464; port 0: a free port). Off unless given.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("store")
        .args(["redis", "redis_cluster"])
        .required(true)
        .multiple(false)
))]
pub struct CloudArgs {
    /// One Redis, e.g. redis://127.0.0.1:6379. Either this or --redis-cluster.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,

    /// A Redis Cluster: seed nodes, comma-separated, e.g.
    /// redis://10.0.0.1:7000,redis://10.0.0.2:7000 (any one suffices; the
    /// rest of the cluster is learnt from it). Either this or --redis.
    #[arg(long, value_name = "URL[,URL...]")]
    pub redis_cluster: Option<String>,

    /// The address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0")]
    pub listen: String,

    #[command(flatten)]
    pub ports: PortArgs,

    /// The edges' keys: one `EDGE_ID HEX_KEY` per line (see `edgemeter keygen`).
    /// Each edge must seal its requests with its key. Read again on SIGHUP;
    /// a bad file is refused and the keys in force stay. Also EDGEMETER_KEYS
    /// or its older name EDGEMETER_KEYS_FILE.
    #[arg(long, value_name = "FILE")]
    pub keys: Option<PathBuf>,

    /// Also serve unauthenticated requests: the original system's wire form
    /// and edges without a key. Off unless given.
    #[arg(long)]
    pub allow_unauthenticated: bool,

    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub data: DataArgs,

    /// Pacing: 1 = real time, 60 = a minute of readings per second, `max` = no pacing.
    #[arg(long, value_name = "X|max", default_value = "60")]
    pub speed: Speed,

    /// The edge's SQLite database (created if missing).
    #[arg(long, value_name = "PATH", default_value = "edgemeter-demo/edge.db")]
    pub db: PathBuf,

    /// Exit 0 once the replay is over and every tuple is acknowledged, printing
    /// a one-line JSON summary last on stdout:
    /// {"tuples": N, "acked": N, "households": H, "seconds": S}.
    #[arg(long)]
    pub exit_when_done: bool,

    /// Use this Kafka broker instead of the in-process bus.
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka: Option<String>,

    /// Use this Redis instead of the in-memory cache.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,

    /// The demo edge's name.
    #[arg(long, value_name = "ID", default_value = "demo", value_parser = parse_id)]
    pub edge_id: String,

    /// The cloud's heartbeat port on 127.0.0.1 [default: a free port].
    #[arg(long, value_name = "P", default_value_t = 0)]
    pub heartbeat_port: u16,

    /// The cloud's data port on 127.0.0.1 [default: a free port].
    #[arg(long, value_name = "P", default_value_t = 0)]
    pub data_port: u16,

    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The edge's SQLite database.
    #[arg(long, value_name = "PATH")]
    pub db: PathBuf,

    /// Print one JSON object: {"queued": a, "sent": b, "acked": c, "rejected": d,
    /// "edge": {"running": false}}, or with a running edge its live state
    /// under "edge": {"running": true, "consuming": bool, "connected": bool,
    /// "store_errors": n, ...}.
    #[arg(long)]
    pub json: bool,
}

fn parse_reading_form(text: &str) -> Result<ReadingForm, String> {
    ReadingForm::from_name(text)
        .ok_or_else(|| format!("`{text}` is not a reading form: edgemeter or original"))
}

fn parse_id(text: &str) -> Result<String, String> {
    edgemeter_wire::check_id(text)
        .map(|()| text.to_owned())
        .map_err(str::to_owned)
}

/// Parses `90s`, `10m`, `1h`, `1h30m`, `500ms`, `2d`: one or more numbers,
/// each with a unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty duration; write e.g. 90s, 10m or 1h".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("`{text}`: expected a number at `{rest}`"));
        }
        let count: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{text}`: a unit is missing (ms, s, m, h, d)")),
            unit => return Err(format!("`{text}`: unknown unit `{unit}` (ms, s, m, h, d)")),
        };
        rest = &rest[unit_len..];
        let part_ms = count
            .checked_mul(unit_ms)
            .ok_or_else(|| format!("`{text}` is too long"))?;
        total += Duration::from_millis(part_ms);
        if total > DURATION_MAX {
            return Err(format!("`{text}` exceeds the limit of 366 days"));
        }
    }
    Ok(total)
}

/// Parses `--partitions P[,P...]`: partition numbers (0 or more), each once.
pub fn parse_partitions(text: &str) -> Result<BTreeSet<i32>, String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if parts.len() > PARTITIONS_LISTED_MAX {
        return Err(format!(
            "{} partitions; at most {PARTITIONS_LISTED_MAX}",
            parts.len()
        ));
    }
    let mut partitions = BTreeSet::new();
    for part in parts {
        let partition: i32 = part
            .parse()
            .ok()
            .filter(|partition| *partition >= 0)
            .ok_or_else(|| {
                format!("`{part}` is not a partition number (0, 1, ...); expected e.g. `0,1`")
            })?;
        if !partitions.insert(partition) {
            return Err(format!("partition {partition} is named twice"));
        }
    }
    Ok(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in [
            "",
            "10",
            "m",
            "10x",
            "1.5h",
            "-1s",
            "999999999999999999999s",
            "400d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} parsed");
        }
    }

    /// Goal: partition lists parse into sets; anything but distinct
    /// non-negative numbers is refused with the entry named.
    #[test]
    fn partition_lists_parse() {
        assert_eq!(parse_partitions("0"), Ok(BTreeSet::from([0])));
        assert_eq!(parse_partitions("2, 0,1"), Ok(BTreeSet::from([0, 1, 2])));
        for (bad, reason) in [
            ("", "``"),
            ("0,", "``"),
            ("-1", "`-1`"),
            ("a", "`a`"),
            ("1.5", "`1.5`"),
            ("0,0", "named twice"),
            ("99999999999", "`99999999999`"),
        ] {
            let error = parse_partitions(bad).unwrap_err();
            assert!(error.contains(reason), "{bad}: {error}");
        }
        let many: Vec<String> = (0..=PARTITIONS_LISTED_MAX).map(|p| p.to_string()).collect();
        assert!(parse_partitions(&many.join(","))
            .unwrap_err()
            .contains("at most"));
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_documented_invocations_parse() {
        let parse = |line: &str| Cli::try_parse_from(line.split_whitespace());
        let demo =
            parse("edgemeter demo --speed max --duration 10m --db x.db --exit-when-done").unwrap();
        let Command::Demo(demo) = demo.command else {
            panic!("not demo")
        };
        assert_eq!(demo.speed, Speed::Max);
        assert_eq!(demo.data.duration, Some(Duration::from_secs(600)));
        assert!(demo.exit_when_done);
        let edge = parse("edgemeter edge --kafka k:1 --cloud c --db e.db").unwrap();
        let Command::Edge(edge) = edge.command else {
            panic!("not edge")
        };
        assert_eq!(edge.ports.heartbeat_port, 63270);
        assert_eq!(edge.ports.data_port, 63271);
        assert_eq!(edge.edge_id, "edge-1");
        assert_eq!(edge.readings, ReadingForm::EdgeMeter);
        assert_eq!(edge.metrics, None, "metrics are off unless asked for");
        assert_eq!(edge.partitions, None, "every partition unless told");
        let nodes = edge
            .cloud
            .resolve(edge.ports.heartbeat_port, edge.ports.data_port);
        assert_eq!(nodes.unwrap().len(), 1, "--cloud HOST is one node");
        let sites = parse(
            "edgemeter edge --kafka k:1 --cloud c1,c2:7000:7001 --heartbeat-port 5 --data-port 6 --partitions 0,1 --db e.db",
        );
        let Command::Edge(sites) = sites.unwrap().command else {
            panic!("not edge")
        };
        assert_eq!(sites.partitions, Some(BTreeSet::from([0, 1])));
        let nodes = sites
            .cloud
            .resolve(sites.ports.heartbeat_port, sites.ports.data_port);
        let names: Vec<String> = nodes.unwrap().iter().map(|node| node.name()).collect();
        assert_eq!(names, ["c1:5:6", "c2:7000:7001"]);
        assert!(parse("edgemeter edge --kafka k:1 --cloud c1,,c2 --db e.db").is_err());
        assert!(parse("edgemeter edge --kafka k:1 --cloud c --partitions 0,0 --db e.db").is_err());
        let with_metrics =
            parse("edgemeter edge --kafka k:1 --cloud c --db e.db --metrics 127.0.0.1:9464");
        let Command::Edge(with_metrics) = with_metrics.unwrap().command else {
            panic!("not edge")
        };
        assert_eq!(with_metrics.metrics.as_deref(), Some("127.0.0.1:9464"));
        let original = parse("edgemeter edge --kafka k:1 --cloud c --db e.db --readings original");
        let Command::Edge(original) = original.unwrap().command else {
            panic!("not edge")
        };
        assert_eq!(original.readings, ReadingForm::Original);
        assert!(parse("edgemeter edge --kafka k:1 --cloud c --db e.db --readings pynng").is_err());
        assert!(parse("edgemeter edge --kafka k:1 --cloud c --db e.db --edge-id a:b").is_err());
        assert!(parse("edgemeter status --db e.db --json").is_ok());
        assert!(parse("edgemeter cloud --redis redis://127.0.0.1:1").is_ok());
        let cluster = parse("edgemeter cloud --redis-cluster redis://a:1,redis://b:2").unwrap();
        let Command::Cloud(cluster) = cluster.command else {
            panic!("not cloud")
        };
        assert_eq!(cluster.redis, None);
        assert_eq!(
            cluster.redis_cluster.as_deref(),
            Some("redis://a:1,redis://b:2")
        );
        assert!(
            parse("edgemeter cloud --redis redis://a:1 --redis-cluster redis://b:2").is_err(),
            "one or the other"
        );
        assert!(parse("edgemeter cloud").is_err(), "one is required");
        assert!(parse("edgemeter households --kafka k:1 --speed fast").is_err());
    }
}
