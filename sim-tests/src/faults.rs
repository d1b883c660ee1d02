//! The fault schedule: what goes wrong in one seed, and when.
//!
//! A [`Scenario`] is explicit data (JSON on disk): the data slice, the
//! [`Topology`] (how many edges, cloud nodes and cache shards), the network
//! profile, and a list of timed [`FaultEvent`]s. `run` draws one per
//! seed with [`Scenario::draw`]; `replay --schedule FILE` and the shrinking
//! test run one given as data. Drawing is swarm testing (Groce et al.,
//! ISSTA 2012): each seed first picks which kinds of fault are on at all and
//! how hard they hit, then draws events of those kinds only, so seeds differ
//! in character instead of all being the same average mix.
//!
//! The faults come from one `SmallRng` seeded from the seed, the topology
//! from another (so that a seed's faults do not move with its topology);
//! turmoil's own RNG is seeded from the seed too (in `world`).

use edgemeter_env::CrashPoint;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The most fault events of one kind in a seed, whatever the duration.
pub const FAULTS_PER_KIND_MAX: usize = 40;

/// Mixed into the seed so the schedule's RNG differs from turmoil's.
const SCHEDULE_SALT: u64 = 0x5eed_fa17_0000_0001;

/// Mixed into the seed for the topology's own RNG: drawing the topology
/// takes nothing from the schedule's, so that a seed's faults are drawn
/// from the same numbers whatever its topology.
const TOPOLOGY_SALT: u64 = 0x5eed_fa17_0000_0002;

/// The share of seeds, in percent, with two or more edges, cloud nodes,
/// cache shards (each drawn on its own; half of those have three). About
/// a fifth of the seeds then have one of each, as the world had before,
/// and a few percent three of each. Edges and nodes are hosts ticked at
/// every step: these shares keep the default sweep's wall time within a
/// few tens of percent of the single-edge world's.
const SEVERAL_PERCENT: u32 = 40;

/// The most edges, cloud nodes and cache shards a scenario has. Each edge
/// and node is a host that turmoil ticks every step, so every one costs
/// wall time on every seed that has it; three of each show everything two
/// do (a peer that is neither the first nor the one faulted) and stay cheap.
pub const EDGES_MAX: usize = 3;
pub const NODES_MAX: usize = 3;
pub const SHARDS_MAX: usize = 3;

const EDGE_HOSTS: [&str; EDGES_MAX] = ["edge", "edge-2", "edge-3"];
const CLOUD_HOSTS: [&str; NODES_MAX] = [crate::link::CLOUD_HOST, "cloud-2", "cloud-3"];

/// One simulated machine. Edges and cloud nodes are numbered from 0; the
/// first of each keeps the name the single-edge, single-node world had
/// (`edge`, `cloud`), so that a schedule, a trace or a log line of such a
/// seed reads as before. In JSON a host is its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Host {
    Broker,
    Households,
    Edge(u8),
    Cloud(u8),
    Redis,
}

impl Host {
    pub fn name(self) -> &'static str {
        match self {
            Host::Broker => crate::broker::BROKER_HOST,
            Host::Households => "households",
            Host::Edge(index) => EDGE_HOSTS[usize::from(index)],
            Host::Cloud(index) => CLOUD_HOSTS[usize::from(index)],
            Host::Redis => crate::redis::REDIS_HOST,
        }
    }

    /// The host named `name`, if any (of any topology up to the maxima).
    pub fn from_name(name: &str) -> Option<Host> {
        let fixed = [Host::Broker, Host::Households, Host::Redis];
        let edges = (0..EDGES_MAX as u8).map(Host::Edge);
        let nodes = (0..NODES_MAX as u8).map(Host::Cloud);
        fixed
            .into_iter()
            .chain(edges)
            .chain(nodes)
            .find(|host| host.name() == name)
    }
}

impl From<Host> for String {
    fn from(host: Host) -> String {
        host.name().to_owned()
    }
}

impl TryFrom<String> for Host {
    type Error = String;

    fn try_from(name: String) -> Result<Host, String> {
        Host::from_name(&name).ok_or_else(|| format!("no host named {name:?}"))
    }
}

/// How many edges, cloud nodes and cache shards a seed runs. Part of the
/// scenario (a schedule names hosts of its topology); a scenario without
/// one is the single-edge, single-node, single-shard world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub edges: usize,
    pub nodes: usize,
    pub shards: usize,
}

impl Default for Topology {
    fn default() -> Topology {
        Topology::SINGLE
    }
}

impl Topology {
    pub const SINGLE: Topology = Topology {
        edges: 1,
        nodes: 1,
        shards: 1,
    };

    /// Every host of this topology, in a fixed order (the heal walks its
    /// pairs, the liveness check its hosts).
    pub fn hosts(&self) -> Vec<Host> {
        let mut hosts = vec![Host::Broker, Host::Redis];
        hosts.extend(self.node_hosts());
        hosts.extend(self.edge_hosts());
        hosts.push(Host::Households);
        hosts
    }

    pub fn edge_hosts(&self) -> impl Iterator<Item = Host> {
        (0..self.edges as u8).map(Host::Edge)
    }

    pub fn node_hosts(&self) -> impl Iterator<Item = Host> {
        (0..self.nodes as u8).map(Host::Cloud)
    }

    /// Within 1..=the maxima, and no more edges than households (each edge
    /// serves at least one).
    pub fn clamped(self, households: usize) -> Topology {
        Topology {
            edges: self.edges.clamp(1, EDGES_MAX.min(households.max(1))),
            nodes: self.nodes.clamp(1, NODES_MAX),
            shards: self.shards.clamp(1, SHARDS_MAX),
        }
    }

    /// The shard that owns `bucket`: buckets are dealt round-robin, so
    /// each shard owns a fixed subset of the store's buckets, as the slots
    /// of a Redis Cluster are split among its primaries.
    pub fn shard_of(&self, bucket: u16) -> usize {
        usize::from(bucket) % self.shards
    }

    /// The buckets shard `shard` owns.
    pub fn buckets_of(&self, shard: usize) -> Vec<u16> {
        (0..edgemeter_wire::STORE_BUCKETS as u16)
            .filter(|bucket| self.shard_of(*bucket) == shard)
            .collect()
    }
}

/// Which way a partition blocks traffic between `from` and `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Both,
    /// Only `from` -> `to` is dropped.
    Oneway,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    Partition {
        from: Host,
        to: Host,
        direction: Direction,
        duration_ms: u64,
    },
    /// The host's process dies at once and is restarted after `down_ms`.
    Crash { host: Host, down_ms: u64 },
    /// Armed at the event's time: the host freezes at the next time its
    /// logic reaches `point`, is crashed at the next step, and restarts
    /// after `down_ms`.
    CrashAtPoint { point: String, down_ms: u64 },
    /// Redis restarts without persistence after `down_ms`.
    CacheLoss { down_ms: u64 },
    /// The broker is cut off from every other host.
    BrokerOutage { duration_ms: u64 },
    /// Message latency rises to up to `max_ms` for a while.
    LatencySpike { max_ms: u64, duration_ms: u64 },
    /// The link between `host` and `peer` holds every message, both ways,
    /// for `duration_ms`, then delivers them all (turmoil's `hold` and
    /// `release`): a stalled producer, broker or link, where a partition
    /// drops messages instead. Nothing is refused, so a caller sees only
    /// timeouts, as a client of a stalled Kafka broker does.
    Stall {
        host: Host,
        peer: Host,
        duration_ms: u64,
    },
    /// An edge host loses power: its disk keeps what was synced and about
    /// `kept_percent` of the unsynced sectors (`edgemeter-simdisk`), its
    /// process dies, and it boots again after `down_ms`.
    PowerLoss {
        down_ms: u64,
        kept_percent: u8,
        /// Which edge (0 when the scenario has one).
        #[serde(default, skip_serializing_if = "is_zero")]
        edge: u8,
    },
    /// Armed at the event's time: cloud node `node` is crashed at the
    /// first step at which it has data requests in flight (read from the
    /// pipe and not yet answered), and restarts after `down_ms`. The edges
    /// see their pipe to it break with batches outstanding and must resend
    /// them to another node (or to it once it is back). Disarmed unfired
    /// after [`INFLIGHT_ARM_MS_MAX`].
    CrashNodeInFlight { node: u8, down_ms: u64 },
    /// Cache shard `shard` is restarted empty, like a Redis Cluster primary
    /// that failed over to a replica that had not received its recent
    /// writes (or restarted without persistence): the keys and epochs of
    /// the buckets it owns are gone, the other shards keep theirs.
    LoseShard { shard: u8 },
    /// Edge `edge`'s wall clock reads `offset_ms` off the cloud's for
    /// `duration_ms` (the heal sets it right at the latest). Beyond the
    /// seal window ([`SEAL_WINDOW_MS`]) the cloud refuses every request the
    /// edge seals meanwhile; the edge keeps its tuples and ships them once
    /// the clocks agree again.
    ClockSkew {
        #[serde(default, skip_serializing_if = "is_zero")]
        edge: u8,
        offset_ms: i64,
        duration_ms: u64,
    },
    /// Edge `edge`'s disk fails for `duration_ms` (`edgemeter-simdisk`):
    /// full (writes that grow a file get `SQLITE_FULL`) or failing (every
    /// write, truncation and sync gets an I/O error).
    DiskFailure {
        #[serde(default, skip_serializing_if = "is_zero")]
        edge: u8,
        failure: DiskError,
        duration_ms: u64,
    },
    /// The broker host crashes and restarts after `down_ms`. Its log and
    /// commits survive (a Kafka broker's are on disk); produce requests it
    /// had read and not yet acknowledged are lost with it (the simulated
    /// broker waits [`crate::broker::PRODUCE_ACK_DELAY`] before appending
    /// and acknowledging, as a leader waits for its followers), so the
    /// producer must send them again.
    BrokerCrash { down_ms: u64 },
    /// A second producer publishes again the newest reading that is at
    /// least `age_ms` old ([`crate::households`]): a duplicate whose window
    /// has closed, which the edge keeps as `late` without changing the
    /// stored average.
    StaleDuplicate { age_ms: u64 },
}

/// Every fault kind [`Fault::kind_name`] names, in the order the run
/// summary's coverage lists them. A kind is one row of the swarm table (a
/// partition is named by the hosts it separates; an outage of
/// [`LONG_OUTAGE_MS`] or more is a kind of its own).
pub const FAULT_KINDS: [&str; 28] = [
    "partition-edge-cloud",
    "partition-edge-broker",
    "partition-cloud-redis",
    "partition-households-broker",
    "stall-edge-broker",
    "stall-households-broker",
    "broker-outage",
    "crash-edge",
    "crash-cloud",
    "crash-at-point",
    "cache-loss",
    "latency-spike",
    "power-loss",
    "crash-node-in-flight",
    "lose-shard",
    "long-partition-edge-cloud",
    "long-partition-edge-broker",
    "long-partition-cloud-redis",
    "long-crash-edge",
    "long-crash-cloud",
    "clock-skew-within-window",
    "clock-skew-beyond-window",
    "disk-full",
    "disk-io-error",
    "broker-crash",
    "stale-duplicate",
    // Not `Fault` events: the forger host's requests, which the cloud
    // answered (`forger::ForgerTally`).
    "forgery",
    "replay",
];

impl Fault {
    /// The fault's kind, one of [`FAULT_KINDS`].
    pub fn kind_name(&self) -> &'static str {
        let long = |length: u64| length >= LONG_OUTAGE_MS.0;
        let is = |host: Host, role: fn(Host) -> bool| role(host);
        let edge = |host: Host| matches!(host, Host::Edge(_));
        let cloud = |host: Host| matches!(host, Host::Cloud(_));
        match self {
            Fault::Partition {
                from,
                to,
                duration_ms,
                ..
            } => {
                let between = |a: fn(Host) -> bool, b: fn(Host) -> bool| {
                    (is(*from, a) && is(*to, b)) || (is(*from, b) && is(*to, a))
                };
                let (long_name, name) = if between(edge, cloud) {
                    ("long-partition-edge-cloud", "partition-edge-cloud")
                } else if between(edge, |host| host == Host::Broker) {
                    ("long-partition-edge-broker", "partition-edge-broker")
                } else if between(cloud, |host| host == Host::Redis) {
                    ("long-partition-cloud-redis", "partition-cloud-redis")
                } else {
                    ("partition-households-broker", "partition-households-broker")
                };
                if long(*duration_ms) {
                    long_name
                } else {
                    name
                }
            }
            Fault::Stall { host, peer, .. } => {
                if edge(*host) || edge(*peer) {
                    "stall-edge-broker"
                } else {
                    "stall-households-broker"
                }
            }
            Fault::BrokerOutage { .. } => "broker-outage",
            Fault::Crash { host, down_ms } => match (edge(*host), long(*down_ms)) {
                (true, true) => "long-crash-edge",
                (true, false) => "crash-edge",
                (false, true) => "long-crash-cloud",
                (false, false) => "crash-cloud",
            },
            Fault::CrashAtPoint { .. } => "crash-at-point",
            Fault::CacheLoss { .. } => "cache-loss",
            Fault::LatencySpike { .. } => "latency-spike",
            Fault::PowerLoss { .. } => "power-loss",
            Fault::CrashNodeInFlight { .. } => "crash-node-in-flight",
            Fault::LoseShard { .. } => "lose-shard",
            Fault::ClockSkew { offset_ms, .. } => {
                if offset_ms.unsigned_abs() > SEAL_WINDOW_MS {
                    "clock-skew-beyond-window"
                } else {
                    "clock-skew-within-window"
                }
            }
            Fault::DiskFailure { failure, .. } => match failure {
                DiskError::Full => "disk-full",
                DiskError::Io => "disk-io-error",
            },
            Fault::BrokerCrash { .. } => "broker-crash",
            Fault::StaleDuplicate { .. } => "stale-duplicate",
        }
    }
}

/// How a [`Fault::DiskFailure`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskError {
    Full,
    Io,
}

impl DiskError {
    pub fn failure(self) -> edgemeter_simdisk::DiskFailure {
        match self {
            DiskError::Full => edgemeter_simdisk::DiskFailure::Full,
            DiskError::Io => edgemeter_simdisk::DiskFailure::Io,
        }
    }
}

/// The cloud's seal window: how far a sealed request's time may be from
/// the cloud's clock (`CloudAuth::window`, 2 minutes). Clock skews are
/// drawn within and beyond it.
pub const SEAL_WINDOW_MS: u64 = 120_000;

/// Outages longer than every timeout of the system: the seal window (2
/// min), NNG's resend backstop (`AIO_TIMEOUT`, 30 s), the bus's socket
/// timeout (60 s), the producer's delivery timeout and the edge's idle
/// flush (60 s). Drawn between these bounds.
pub const LONG_OUTAGE_MS: (u64, u64) = (180_000, 360_000);

/// How far past the replay's end a long outage may push the heal, so that
/// it lasts its drawn length instead of being cut at the end: the cost of
/// a long outage is simulated time, and this bounds it.
pub const LONG_OUTAGE_OVERRUN_MS_MAX: u64 = 240_000;

/// How long after the replay's end the heal comes in a seed whose faults
/// are still active then (drawn in this range), so that the edges' final
/// idle flush (60 s after the last reading) runs under faults too.
pub const HEAL_DELAY_MS: (u64, u64) = (20_000, 120_000);

/// How long an armed [`Fault::CrashNodeInFlight`] waits for its node to
/// have requests in flight. A node with no edge talking to it (all its
/// links cut, say) never has any; past this the crash is dropped.
pub const INFLIGHT_ARM_MS_MAX: u64 = 30_000;

fn is_zero(value: &u8) -> bool {
    *value == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultEvent {
    pub at_ms: u64,
    #[serde(flatten)]
    pub fault: Fault,
}

/// Link behaviour for the whole run. Rates are in parts per million per
/// message sent on a link (turmoil's `fail_rate` / `repair_rate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub latency_min_ms: u64,
    pub latency_max_ms: u64,
    pub fail_rate_ppm: u32,
    pub repair_rate_ppm: u32,
}

/// One seed's whole world, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scenario {
    pub seed: u64,
    /// A planted bug's name (`edgemeter-sim mutations`), or none.
    pub mutation: Option<String>,
    /// How many households, taken from the sorted ids starting at
    /// `household_first` (wrapping around).
    pub households: usize,
    pub household_first: usize,
    /// Where the replayed slice starts, after the data set's first reading.
    pub data_offset_ms: i64,
    /// How much data is replayed; also when the heal phase starts.
    pub duration_ms: i64,
    pub tick_ms: u64,
    /// The edge's idle flush, when the run overrides the production value
    /// (`None`: `EdgeConfig`'s own). See [`crate::DEFAULT_EDGE_IDLE_FLUSH_MS`].
    #[serde(default)]
    pub edge_idle_flush_ms: Option<u64>,
    pub network: Network,
    pub faults: Vec<FaultEvent>,
    /// When the `forger` host sends an unsealed batch in the keyed edge's
    /// name (ms from the start); with any, the cloud runs in mixed mode
    /// (keys and unauthenticated requests both allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forgeries_at_ms: Vec<u64>,
    /// When the `forger` host presents a sealed request captured a day
    /// earlier (ms from the start); the cloud must refuse it as outside
    /// its seal window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replays_at_ms: Vec<u64>,
    /// Edges, cloud nodes, cache shards; absent in a schedule of the
    /// single-edge world.
    #[serde(default)]
    pub topology: Topology,
    /// How long after the replay's end the heal comes (0: at the end);
    /// faults active then stay on until it.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub heal_delay_ms: u64,
}

fn is_zero_u64(value: &u64) -> bool {
    *value == 0
}

impl Scenario {
    /// When the heal phase starts: the replay's end plus the heal delay.
    pub fn heal_at_ms(&self) -> u64 {
        (self.duration_ms.max(0) as u64).saturating_add(self.heal_delay_ms)
    }
}

/// What `run` asks for; the rest is drawn per seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrawOptions {
    pub mutation: Option<String>,
    pub households: usize,
    pub duration_ms: i64,
    pub tick_ms: u64,
    pub edge_idle_flush_ms: Option<u64>,
    /// Households in the data set, and its span, to draw a slice from.
    pub households_available: usize,
    pub data_span_ms: i64,
    /// Off: a clean network and no faults (the baseline).
    pub faults: bool,
    /// A fixed topology for every seed; `None`: drawn per seed.
    pub topology: Option<Topology>,
}

/// One kind of fault in the swarm: how often a seed turns it on, and how
/// many events per simulated minute it then has (drawn in this range).
struct Kind {
    on_probability: f64,
    per_minute: (f64, f64),
}

/// The swarm table. Probabilities are tuned so that every planted bug is
/// caught within a few dozen seeds (see `tests/planted.rs`); the checker is
/// never weakened to make a seed pass.
const PARTITION_EDGE_CLOUD: Kind = Kind {
    on_probability: 0.5,
    per_minute: (0.3, 2.0),
};
const PARTITION_EDGE_BROKER: Kind = Kind {
    on_probability: 0.35,
    per_minute: (0.3, 1.5),
};
const PARTITION_CLOUD_REDIS: Kind = Kind {
    on_probability: 0.3,
    per_minute: (0.3, 1.5),
};
const BROKER_OUTAGE: Kind = Kind {
    on_probability: 0.2,
    per_minute: (0.2, 0.8),
};
const EDGE_CRASH: Kind = Kind {
    on_probability: 0.5,
    per_minute: (0.2, 1.2),
};
const CLOUD_CRASH: Kind = Kind {
    on_probability: 0.4,
    per_minute: (0.2, 1.0),
};
const POINT_CRASH: Kind = Kind {
    on_probability: 0.5,
    per_minute: (0.3, 1.5),
};
const CACHE_LOSS: Kind = Kind {
    on_probability: 0.2,
    per_minute: (0.1, 0.5),
};
const LATENCY_SPIKE: Kind = Kind {
    on_probability: 0.25,
    per_minute: (0.2, 1.0),
};
const PARTITION_HOUSEHOLDS_BROKER: Kind = Kind {
    on_probability: 0.3,
    per_minute: (0.3, 1.5),
};
const STALL_HOUSEHOLDS_BROKER: Kind = Kind {
    on_probability: 0.3,
    per_minute: (0.3, 1.5),
};
const STALL_EDGE_BROKER: Kind = Kind {
    on_probability: 0.35,
    per_minute: (0.3, 1.5),
};

/// How much shorter than the edge's idle flush the households' outages
/// are kept. The bound the edge promises is "a producer stall shorter than
/// `idle_flush` changes no average"; after a stall the households need up
/// to a produce timeout, a backoff and a linger (about 1.5 s) to deliver
/// their backlog, a latency spike adds up to 2 s, and the edge polls
/// every second or so. 15 s covers all of that several times over.
pub const HOUSEHOLDS_OUTAGE_MARGIN_MS: u64 = 15_000;

/// Two households outages closer than this count as one: in between the
/// households may not have delivered their backlog, so the edge would not
/// see the stream move.
pub const HOUSEHOLDS_OUTAGE_GAP_MS: u64 = 5_000;

/// The longest the households may be cut off from the broker in a drawn
/// scenario, for an edge with `idle_flush_ms`. Outages there must stay
/// shorter than the documented bound, or a correct edge closes windows
/// early (it cannot tell a stalled producer from a finished one) and the
/// checker would report what the README documents as the expected cost of
/// a longer stall. Beyond the bound, `tests/` and the README own the
/// behaviour (late readings kept in `rejected`), not the swarm.
pub fn households_outage_ms_max(idle_flush_ms: u64) -> u64 {
    idle_flush_ms.saturating_sub(HOUSEHOLDS_OUTAGE_MARGIN_MS)
}
/// Drawn after every other kind, so that turning it on left the other
/// events of every seed as they were.
const FORGERY: Kind = Kind {
    on_probability: 0.25,
    per_minute: (0.3, 1.0),
};
const EDGE_POWER_LOSS: Kind = Kind {
    on_probability: 0.3,
    per_minute: (0.2, 1.2),
};
const NODE_INFLIGHT_CRASH: Kind = Kind {
    on_probability: 0.35,
    per_minute: (0.2, 1.0),
};
const SHARD_LOSS: Kind = Kind {
    on_probability: 0.5,
    per_minute: (0.1, 0.6),
};
// Issue 13's kinds, drawn after every older one.
const LONG_OUTAGE: Kind = Kind {
    on_probability: 0.2,
    per_minute: (0.2, 0.6),
};
const CLOCK_SKEW: Kind = Kind {
    on_probability: 0.2,
    per_minute: (0.3, 1.0),
};
const DISK_FAILURE: Kind = Kind {
    on_probability: 0.25,
    per_minute: (0.3, 1.2),
};
const BROKER_CRASH: Kind = Kind {
    on_probability: 0.2,
    per_minute: (0.2, 0.8),
};
const STALE_DUPLICATE: Kind = Kind {
    on_probability: 0.2,
    per_minute: (0.2, 1.0),
};

/// The share of seeds, in percent, whose faults are still on when the
/// replay ends (the heal comes [`HEAL_DELAY_MS`] later).
const FAULTS_AT_END_PERCENT: u32 = 15;

/// The share of seeds, in percent, that replay [`BIG_HOUSEHOLDS`]
/// households for [`BIG_DURATION_MS`] with the first edge down, or cut off
/// from the broker, for nearly all of it: when it reads again, its backlog
/// is more than `store_pending_max` (4,096) windows at once, and more than
/// a batch (1,024 tuples) to ship. Few, so that the sweep's rate stays
/// high.
const BIG_PERCENT: u32 = 6;

/// Households of a big seed (the data set has 50).
pub const BIG_HOUSEHOLDS: usize = 50;

/// How much data a big seed replays: 50 households make 10 windows a
/// second, so the 4,096 of `store_pending_max` take about 410 s.
pub const BIG_DURATION_MS: i64 = 480_000;

/// When a big seed's outage of the first edge starts, and how long before
/// the replay's end it stops at the latest.
const BIG_OUTAGE_START_MS: u64 = 10_000;
const BIG_OUTAGE_END_BEFORE_MS: (u64, u64) = (5_000, 20_000);

/// Mixed into the seed for the big-seed draw, which takes nothing from
/// the schedule's RNG.
const BIG_SALT: u64 = 0x5eed_fa17_0000_0003;
/// Replays of a captured sealed request, drawn after issue 13's other
/// kinds.
const REPLAY: Kind = Kind {
    on_probability: 0.2,
    per_minute: (0.3, 1.0),
};

impl Scenario {
    /// A fault-free scenario for `seed` with the given shape.
    pub fn calm(seed: u64, options: &DrawOptions) -> Scenario {
        let mut rng = SmallRng::seed_from_u64(seed ^ SCHEDULE_SALT);
        let span = (options.data_span_ms - options.duration_ms).max(0);
        Scenario {
            seed,
            mutation: options.mutation.clone(),
            households: options.households,
            household_first: rng.gen_range(0..options.households_available.max(1)),
            data_offset_ms: rng.gen_range(0..=span / 1000) * 1000,
            duration_ms: options.duration_ms,
            tick_ms: options.tick_ms,
            edge_idle_flush_ms: options.edge_idle_flush_ms,
            network: Network {
                latency_min_ms: 0,
                latency_max_ms: options.tick_ms,
                fail_rate_ppm: 0,
                repair_rate_ppm: 0,
            },
            faults: Vec::new(),
            forgeries_at_ms: Vec::new(),
            replays_at_ms: Vec::new(),
            topology: options
                .topology
                .unwrap_or_else(|| draw_topology(seed))
                .clamped(options.households),
            heal_delay_ms: 0,
        }
    }

    /// The seed's scenario: its slice of data, its topology, its swarm of
    /// faults.
    pub fn draw(seed: u64, options: &DrawOptions) -> Scenario {
        let mut scenario = Scenario::calm(seed, options);
        if !options.faults {
            return scenario;
        }
        let mut rng =
            SmallRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ SCHEDULE_SALT);
        scenario.network = draw_network(&mut rng);
        let topology = scenario.topology;
        let mut draw = Drawer {
            rng,
            duration_ms: options.duration_ms.max(1) as u64,
            events: Vec::new(),
            topology,
        };
        draw.partitions(&PARTITION_EDGE_CLOUD, Role::Edge, Role::Cloud);
        draw.partitions(&PARTITION_EDGE_BROKER, Role::Edge, Role::Broker);
        draw.partitions(&PARTITION_CLOUD_REDIS, Role::Cloud, Role::Redis);
        draw.each(&BROKER_OUTAGE, |rng| Fault::BrokerOutage {
            duration_ms: short_or_long(rng),
        });
        draw.each(&EDGE_CRASH, |rng| Fault::Crash {
            host: Role::Edge.pick(rng, &topology),
            down_ms: rng.gen_range(10..8_000),
        });
        draw.each(&CLOUD_CRASH, |rng| Fault::Crash {
            host: Role::Cloud.pick(rng, &topology),
            down_ms: rng.gen_range(10..8_000),
        });
        draw.each(&POINT_CRASH, |rng| {
            let point = CrashPoint::ALL[rng.gen_range(0..CrashPoint::ALL.len())];
            Fault::CrashAtPoint {
                point: point.name().to_owned(),
                down_ms: rng.gen_range(10..5_000),
            }
        });
        draw.each(&CACHE_LOSS, |rng| Fault::CacheLoss {
            down_ms: rng.gen_range(0..3_000),
        });
        draw.each(&LATENCY_SPIKE, |rng| Fault::LatencySpike {
            max_ms: rng.gen_range(100..2_000),
            duration_ms: rng.gen_range(500..20_000),
        });
        // Drawn after the older kinds, so that those keep their draws.
        draw.households_outages(options);
        draw.each(&STALL_EDGE_BROKER, |rng| Fault::Stall {
            host: Role::Edge.pick(rng, &topology),
            peer: Host::Broker,
            duration_ms: short_or_long(rng),
        });
        let mut forgeries: Vec<u64> = (0..draw.count(&FORGERY))
            .map(|_| draw.rng.gen_range(0..draw.duration_ms))
            .collect();
        forgeries.sort_unstable();
        scenario.forgeries_at_ms = forgeries;
        // Drawn last, so the seeds' other faults stay as they were.
        draw.each(&EDGE_POWER_LOSS, |rng| Fault::PowerLoss {
            down_ms: rng.gen_range(10..8_000),
            // Half the losses keep nothing unsynced, half a random share.
            kept_percent: if rng.gen_bool(0.5) {
                0
            } else {
                rng.gen_range(0..=100)
            },
            edge: Role::Edge.index(rng, topology.edges),
        });
        // The scale-out kinds come after every older one, for the same
        // reason. A shard loss needs two shards at least: with one, it is
        // the cache loss above without the restart.
        draw.each(&NODE_INFLIGHT_CRASH, |rng| Fault::CrashNodeInFlight {
            node: Role::Cloud.index(rng, topology.nodes),
            down_ms: rng.gen_range(10..8_000),
        });
        if topology.shards > 1 {
            draw.each(&SHARD_LOSS, |rng| Fault::LoseShard {
                shard: rng.gen_range(0..topology.shards as u8),
            });
        }
        // Issue 13's kinds, after every older one, for the same reason.
        draw.each(&LONG_OUTAGE, |rng| long_outage(rng, &topology));
        draw.each(&CLOCK_SKEW, |rng| {
            let magnitude = if rng.gen_bool(0.5) {
                rng.gen_range(1_000..SEAL_WINDOW_MS - 10_000)
            } else {
                rng.gen_range(SEAL_WINDOW_MS + 10_000..SEAL_WINDOW_MS * 8)
            } as i64;
            Fault::ClockSkew {
                edge: Role::Edge.index(rng, topology.edges),
                offset_ms: if rng.gen_bool(0.5) {
                    magnitude
                } else {
                    -magnitude
                },
                duration_ms: rng.gen_range(5_000..90_000),
            }
        });
        draw.each(&DISK_FAILURE, |rng| Fault::DiskFailure {
            edge: Role::Edge.index(rng, topology.edges),
            failure: if rng.gen_bool(0.5) {
                DiskError::Full
            } else {
                DiskError::Io
            },
            duration_ms: rng.gen_range(200..30_000),
        });
        draw.broker_crashes(options);
        draw.each(&STALE_DUPLICATE, |rng| Fault::StaleDuplicate {
            age_ms: rng.gen_range(60_000..120_000),
        });
        // Replays of a captured sealed request, for the same reason.
        let mut replays: Vec<u64> = (0..draw.count(&REPLAY))
            .map(|_| draw.rng.gen_range(0..draw.duration_ms))
            .collect();
        replays.sort_unstable();
        scenario.replays_at_ms = replays;
        if options.households < BIG_HOUSEHOLDS && is_big(seed) {
            draw.make_big(&mut scenario, options);
            draw.duration_ms = scenario.duration_ms.max(1) as u64;
        }
        if draw.rng.gen_range(0..100) < FAULTS_AT_END_PERCENT {
            draw.faults_at_end(&mut scenario);
        }
        if draw.events.is_empty()
            && scenario.forgeries_at_ms.is_empty()
            && scenario.replays_at_ms.is_empty()
        {
            // Every seed draws a fault of some kind: a seed without any
            // tests only the calm path, which every other seed has too.
            let (edge, node) = (
                Role::Edge.pick(&mut draw.rng, &topology),
                Role::Cloud.pick(&mut draw.rng, &topology),
            );
            let at_ms = draw.rng.gen_range(0..draw.duration_ms);
            let fault = partition(&mut draw.rng, edge, node);
            draw.events.push(FaultEvent { at_ms, fault });
        }
        scenario.heal_delay_ms = scenario.heal_delay_ms.max(draw.overrun_ms());
        let mut events = draw.events;
        events.sort_by_key(|event| event.at_ms);
        scenario.faults = events;
        scenario
    }
}

/// Whether `seed` is one of the [`BIG_PERCENT`] big seeds (from an RNG of
/// its own, so the other draws stay as they were).
pub fn is_big(seed: u64) -> bool {
    let mut rng = SmallRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ BIG_SALT);
    rng.gen_range(0..100) < BIG_PERCENT
}

/// An outage longer than every timeout ([`LONG_OUTAGE_MS`]): an edge cut
/// off from the cloud or from the broker, a cloud node cut off from the
/// cache (both ways), or an edge or a node down.
fn long_outage(rng: &mut SmallRng, topology: &Topology) -> Fault {
    let duration_ms = rng.gen_range(LONG_OUTAGE_MS.0..LONG_OUTAGE_MS.1);
    let both = |from: Host, to: Host| Fault::Partition {
        from,
        to,
        direction: Direction::Both,
        duration_ms,
    };
    match rng.gen_range(0..5) {
        0 => both(
            Role::Edge.pick(rng, topology),
            Role::Cloud.pick(rng, topology),
        ),
        1 => both(Role::Edge.pick(rng, topology), Host::Broker),
        2 => both(Role::Cloud.pick(rng, topology), Host::Redis),
        3 => Fault::Crash {
            host: Role::Edge.pick(rng, topology),
            down_ms: duration_ms,
        },
        _ => Fault::Crash {
            host: Role::Cloud.pick(rng, topology),
            down_ms: duration_ms,
        },
    }
}

/// How long `fault` lasts from its start, if it is one of those a long
/// outage is made of.
fn outage_ms(fault: &Fault) -> Option<u64> {
    match fault {
        Fault::Partition { duration_ms, .. } => Some(*duration_ms),
        Fault::Crash { down_ms, .. } => Some(*down_ms),
        _ => None,
    }
}

fn draw_topology(seed: u64) -> Topology {
    let mut rng = SmallRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ TOPOLOGY_SALT);
    let mut count = || {
        let roll = rng.gen_range(0..100);
        if roll >= SEVERAL_PERCENT {
            1
        } else if roll >= SEVERAL_PERCENT / 2 {
            2
        } else {
            3
        }
    };
    Topology {
        edges: count(),
        nodes: count(),
        shards: count(),
    }
}

/// Which kind of host a fault of the swarm hits; the one of them is drawn
/// only when the topology has several, so that a seed of the single-edge
/// world draws exactly the numbers it drew before there were several.
#[derive(Debug, Clone, Copy)]
enum Role {
    Edge,
    Cloud,
    Broker,
    Redis,
}

impl Role {
    fn index(self, rng: &mut SmallRng, count: usize) -> u8 {
        if count > 1 {
            rng.gen_range(0..count as u8)
        } else {
            0
        }
    }

    fn pick(self, rng: &mut SmallRng, topology: &Topology) -> Host {
        match self {
            Role::Edge => Host::Edge(self.index(rng, topology.edges)),
            Role::Cloud => Host::Cloud(self.index(rng, topology.nodes)),
            Role::Broker => Host::Broker,
            Role::Redis => Host::Redis,
        }
    }
}

fn draw_network(rng: &mut SmallRng) -> Network {
    let jitter = rng.gen_bool(0.5);
    let failures = rng.gen_bool(0.3);
    Network {
        latency_min_ms: if jitter { rng.gen_range(0..20) } else { 0 },
        latency_max_ms: if jitter { rng.gen_range(20..300) } else { 10 },
        fail_rate_ppm: if failures {
            rng.gen_range(200..5_000)
        } else {
            0
        },
        repair_rate_ppm: if failures {
            rng.gen_range(20_000..300_000)
        } else {
            0
        },
    }
}

/// Half the faults are blips (under 3 s, inside the edge's timeouts), half
/// are long (up to 45 s, past every timeout and backoff).
fn short_or_long(rng: &mut SmallRng) -> u64 {
    if rng.gen_bool(0.5) {
        rng.gen_range(100..3_000)
    } else {
        rng.gen_range(5_000..45_000)
    }
}

struct Drawer {
    rng: SmallRng,
    duration_ms: u64,
    events: Vec<FaultEvent>,
    topology: Topology,
}

/// The time `event` cuts the households off from the broker, if it does.
fn households_outage(event: &FaultEvent) -> Option<(u64, u64)> {
    let involves = |a: Host, b: Host| {
        (a, b) == (Host::Households, Host::Broker) || (a, b) == (Host::Broker, Host::Households)
    };
    let duration_ms = match &event.fault {
        Fault::BrokerOutage { duration_ms } => *duration_ms,
        Fault::BrokerCrash { down_ms } => *down_ms,
        Fault::Partition {
            from,
            to,
            duration_ms,
            ..
        } if involves(*from, *to) => *duration_ms,
        Fault::Stall {
            host,
            peer,
            duration_ms,
        } if involves(*host, *peer) => *duration_ms,
        _ => return None,
    };
    Some((event.at_ms, event.at_ms.saturating_add(duration_ms)))
}

/// The length of the merged outage (intervals closer than
/// [`HOUSEHOLDS_OUTAGE_GAP_MS`] merge) that contains `candidate`.
fn merged_outage_ms(outages: &[(u64, u64)], candidate: (u64, u64)) -> u64 {
    let mut all: Vec<(u64, u64)> = outages.to_vec();
    all.push(candidate);
    all.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (start, end) in all {
        match merged.last_mut() {
            Some(last) if start <= last.1.saturating_add(HOUSEHOLDS_OUTAGE_GAP_MS) => {
                last.1 = last.1.max(end)
            }
            _ => merged.push((start, end)),
        }
    }
    merged
        .into_iter()
        .find(|(start, end)| *start <= candidate.0 && candidate.1 <= *end)
        .map_or(0, |(start, end)| end - start)
}

impl Drawer {
    /// Broker crashes, each kept only if the households' merged outage
    /// stays within [`households_outage_ms_max`] (a crashed broker cuts the
    /// households off as an outage does).
    fn broker_crashes(&mut self, options: &DrawOptions) {
        let idle_flush_ms = options
            .edge_idle_flush_ms
            .unwrap_or(edgemeter_edge::DEFAULT_IDLE_FLUSH.as_millis() as u64);
        let outage_ms_max = households_outage_ms_max(idle_flush_ms);
        let start = self.events.len();
        self.each(&BROKER_CRASH, |rng| Fault::BrokerCrash {
            down_ms: rng.gen_range(100..8_000),
        });
        let drawn = self.events.split_off(start);
        for event in drawn {
            let outages: Vec<(u64, u64)> =
                self.events.iter().filter_map(households_outage).collect();
            let outage = households_outage(&event).expect("a broker crash is an outage");
            if merged_outage_ms(&outages, outage) <= outage_ms_max {
                self.events.push(event);
            }
        }
    }

    /// Faults still on when the replay ends: the heal comes
    /// [`HEAL_DELAY_MS`] after it, and one outage of the edges' uplink,
    /// their broker link or the cache starts shortly before the end and
    /// lasts until the heal, so the edges' last windows are flushed and
    /// shipped under it.
    fn faults_at_end(&mut self, scenario: &mut Scenario) {
        let delay_ms = self.rng.gen_range(HEAL_DELAY_MS.0..HEAL_DELAY_MS.1);
        scenario.heal_delay_ms = scenario.heal_delay_ms.max(delay_ms);
        let topology = self.topology;
        let before_end_ms = self.rng.gen_range(0..20_000).min(self.duration_ms);
        let (a, b) = match self.rng.gen_range(0..3) {
            0 => (
                Role::Edge.pick(&mut self.rng, &topology),
                Role::Cloud.pick(&mut self.rng, &topology),
            ),
            1 => (Role::Edge.pick(&mut self.rng, &topology), Host::Broker),
            _ => (Role::Cloud.pick(&mut self.rng, &topology), Host::Redis),
        };
        let mut fault = partition(&mut self.rng, a, b);
        if let Fault::Partition { duration_ms, .. } = &mut fault {
            *duration_ms = before_end_ms + delay_ms;
        }
        self.events.push(FaultEvent {
            at_ms: self.duration_ms - before_end_ms,
            fault,
        });
    }

    /// A big seed: [`BIG_HOUSEHOLDS`] households and a long outage of the
    /// first edge (down, or cut off from every cloud node) a third of the
    /// way in, so that its backlog fills whole batches and, after a crash,
    /// its pending store.
    fn make_big(&mut self, scenario: &mut Scenario, options: &DrawOptions) {
        scenario.households = BIG_HOUSEHOLDS.min(options.households_available.max(1));
        scenario.topology = scenario.topology.clamped(scenario.households);
        if scenario.duration_ms < BIG_DURATION_MS {
            scenario.duration_ms = BIG_DURATION_MS;
            // The slice must still fit in the data.
            let span = (options.data_span_ms - BIG_DURATION_MS).max(0);
            scenario.data_offset_ms = scenario.data_offset_ms.min(span / 1000 * 1000);
        }
        let end_ms = scenario.duration_ms.max(0) as u64;
        let at_ms = BIG_OUTAGE_START_MS;
        let before_end_ms = self
            .rng
            .gen_range(BIG_OUTAGE_END_BEFORE_MS.0..BIG_OUTAGE_END_BEFORE_MS.1);
        let duration_ms = end_ms.saturating_sub(at_ms + before_end_ms);
        let fault = if self.rng.gen_bool(0.5) {
            Fault::Crash {
                host: Host::Edge(0),
                down_ms: duration_ms,
            }
        } else {
            Fault::Partition {
                from: Host::Edge(0),
                to: Host::Broker,
                direction: Direction::Both,
                duration_ms,
            }
        };
        self.events.push(FaultEvent { at_ms, fault });
    }

    /// How far past the replay's end the long outages reach, within
    /// [`LONG_OUTAGE_OVERRUN_MS_MAX`]: the heal waits for them.
    fn overrun_ms(&self) -> u64 {
        self.events
            .iter()
            .filter_map(|event| {
                let length = outage_ms(&event.fault)?;
                (length >= LONG_OUTAGE_MS.0).then(|| event.at_ms.saturating_add(length))
            })
            .map(|end| end.saturating_sub(self.duration_ms))
            .max()
            .unwrap_or(0)
            .min(LONG_OUTAGE_OVERRUN_MS_MAX)
    }

    /// Partitions and stalls between the households and the broker, each
    /// kept only if the households' merged outage (broker outages included)
    /// stays within [`households_outage_ms_max`].
    fn households_outages(&mut self, options: &DrawOptions) {
        let idle_flush_ms = options
            .edge_idle_flush_ms
            .unwrap_or(edgemeter_edge::DEFAULT_IDLE_FLUSH.as_millis() as u64);
        let outage_ms_max = households_outage_ms_max(idle_flush_ms);
        let start = self.events.len();
        self.households_partitions();
        self.each(&STALL_HOUSEHOLDS_BROKER, |rng| Fault::Stall {
            host: Host::Households,
            peer: Host::Broker,
            duration_ms: rng.gen_range(100..45_000),
        });
        let drawn = self.events.split_off(start);
        let mut outages: Vec<(u64, u64)> =
            self.events.iter().filter_map(households_outage).collect();
        for event in drawn {
            let Some(outage) = households_outage(&event) else {
                continue;
            };
            if merged_outage_ms(&outages, outage) <= outage_ms_max {
                outages.push(outage);
                self.events.push(event);
            }
        }
    }

    fn count(&mut self, kind: &Kind) -> usize {
        if !self.rng.gen_bool(kind.on_probability) {
            return 0;
        }
        let rate = self.rng.gen_range(kind.per_minute.0..kind.per_minute.1);
        let minutes = self.duration_ms as f64 / 60_000.0;
        ((rate * minutes).round() as usize).clamp(1, FAULTS_PER_KIND_MAX)
    }

    fn each(&mut self, kind: &Kind, mut make: impl FnMut(&mut SmallRng) -> Fault) {
        for _ in 0..self.count(kind) {
            let at_ms = self.rng.gen_range(0..self.duration_ms);
            let fault = make(&mut self.rng);
            self.events.push(FaultEvent { at_ms, fault });
        }
    }

    /// Partitions between the households and the broker (both single).
    fn households_partitions(&mut self) {
        self.each(&PARTITION_HOUSEHOLDS_BROKER, |rng| {
            partition(rng, Host::Households, Host::Broker)
        });
    }

    fn partitions(&mut self, kind: &Kind, a: Role, b: Role) {
        let topology = self.topology;
        self.each(kind, |rng| {
            let (a, b) = (a.pick(rng, &topology), b.pick(rng, &topology));
            partition(rng, a, b)
        });
    }
}

/// A partition between `a` and `b`: either way round, one-way or both,
/// blip or long.
fn partition(rng: &mut SmallRng, a: Host, b: Host) -> Fault {
    let (from, to) = if rng.gen_bool(0.5) { (a, b) } else { (b, a) };
    let direction = if rng.gen_bool(0.5) {
        Direction::Both
    } else {
        Direction::Oneway
    };
    Fault::Partition {
        from,
        to,
        direction,
        duration_ms: short_or_long(rng),
    }
}

pub fn crash_point_named(name: &str) -> Option<CrashPoint> {
    CrashPoint::ALL
        .into_iter()
        .find(|point| point.name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> DrawOptions {
        DrawOptions {
            mutation: None,
            households: 3,
            duration_ms: 180_000,
            tick_ms: 10,
            edge_idle_flush_ms: None,
            households_available: 50,
            data_span_ms: 3_600_000,
            faults: true,
            topology: None,
        }
    }

    #[test]
    fn drawing_is_a_function_of_the_seed_and_round_trips_as_json() {
        let first = Scenario::draw(42, &options());
        assert_eq!(first, Scenario::draw(42, &options()));
        assert_ne!(first, Scenario::draw(43, &options()));
        let text = serde_json::to_string_pretty(&first).unwrap();
        assert_eq!(serde_json::from_str::<Scenario>(&text).unwrap(), first);
        for event in &first.faults {
            assert!(event.at_ms < 180_000);
        }
    }

    /// Goal: in drawn scenarios the households are never cut off from the
    /// broker for longer than the bound (broker outages and the new
    /// partitions and stalls together), while such faults are drawn at all.
    /// Method: 300 seeds; merge every seed's households outages and check
    /// the longest.
    #[test]
    fn households_outages_stay_within_the_bound() {
        let bound = households_outage_ms_max(edgemeter_edge::DEFAULT_IDLE_FLUSH.as_millis() as u64);
        assert!(bound >= 30_000, "the bound leaves room for long stalls");
        let mut drawn = 0;
        for seed in 0..300 {
            let scenario = Scenario::draw(seed, &options());
            let households_fault = |event: &FaultEvent| {
                households_outage(event).is_some()
                    && !matches!(event.fault, Fault::BrokerOutage { .. })
            };
            for (index, event) in scenario.faults.iter().enumerate() {
                if !households_fault(event) {
                    continue;
                }
                let others: Vec<(u64, u64)> = scenario
                    .faults
                    .iter()
                    .enumerate()
                    .filter(|(other, _)| *other != index)
                    .filter_map(|(_, other)| households_outage(other))
                    .collect();
                let outage = households_outage(event).expect("checked above");
                let merged = merged_outage_ms(&others, outage);
                assert!(
                    merged <= bound,
                    "seed {seed}: households cut off for {merged} ms"
                );
            }
            drawn += scenario
                .faults
                .iter()
                .filter(|event| {
                    matches!(
                        event.fault,
                        Fault::Stall {
                            host: Host::Households,
                            ..
                        } | Fault::Partition {
                            from: Host::Households,
                            ..
                        } | Fault::Partition {
                            to: Host::Households,
                            ..
                        }
                    )
                })
                .count();
        }
        assert!(drawn > 100, "only {drawn} households faults in 300 seeds");
    }

    /// Goal: no seed tests only the calm path, and issue 13's shapes are
    /// drawn as documented: big seeds a few percent (50 households, 8
    /// minutes, the first edge out for nearly all of it), long outages
    /// past every timeout with the heal waiting for them, and a share of
    /// seeds still faulted when the replay ends. Method: 1,000 seeds.
    #[test]
    fn every_seed_draws_a_fault_and_the_new_shapes_are_as_documented() {
        let (mut big, mut long, mut at_end) = (0, 0, 0);
        for seed in 0..1_000 {
            let scenario = Scenario::draw(seed, &options());
            assert!(
                !scenario.faults.is_empty() || !scenario.forgeries_at_ms.is_empty(),
                "seed {seed} draws no fault"
            );
            if scenario.households == BIG_HOUSEHOLDS {
                big += 1;
                assert_eq!(scenario.duration_ms, BIG_DURATION_MS, "seed {seed}");
                let out = scenario.faults.iter().any(|event| {
                    event.at_ms == BIG_OUTAGE_START_MS
                        && outage_ms(&event.fault)
                            .is_some_and(|ms| ms >= BIG_DURATION_MS as u64 - 30_000)
                });
                assert!(out, "seed {seed}: the first edge is out");
            }
            for event in &scenario.faults {
                let Some(length) = outage_ms(&event.fault) else {
                    continue;
                };
                if length < LONG_OUTAGE_MS.0 {
                    continue;
                }
                long += 1;
                // The heal waits for the outage, within the overrun bound.
                let end = event.at_ms + length;
                let healed = scenario.heal_at_ms();
                assert!(
                    healed >= end.min(scenario.duration_ms as u64 + LONG_OUTAGE_OVERRUN_MS_MAX),
                    "seed {seed}: healed at {healed}, the outage ends at {end}"
                );
            }
            at_end += usize::from(scenario.heal_delay_ms > 0);
        }
        assert!((30..=100).contains(&big), "{big} big seeds in 1,000");
        assert!(long > 150, "{long} long outages in 1,000 seeds");
        assert!(at_end > 150, "{at_end} seeds healed after the replay's end");
    }

    /// Goal: a fault's kind is named as the coverage lists it. Method: one
    /// fault of several kinds, short and long.
    #[test]
    fn kinds_are_named_by_hosts_and_length() {
        let partition = |from, to, duration_ms| Fault::Partition {
            from,
            to,
            direction: Direction::Oneway,
            duration_ms,
        };
        assert_eq!(
            partition(Host::Cloud(1), Host::Edge(0), 1_000).kind_name(),
            "partition-edge-cloud"
        );
        assert_eq!(
            partition(Host::Broker, Host::Edge(2), 200_000).kind_name(),
            "long-partition-edge-broker"
        );
        assert_eq!(
            partition(Host::Households, Host::Broker, 1_000).kind_name(),
            "partition-households-broker"
        );
        let skew = |offset_ms| Fault::ClockSkew {
            edge: 0,
            offset_ms,
            duration_ms: 1,
        };
        assert_eq!(skew(-119_000).kind_name(), "clock-skew-within-window");
        assert_eq!(skew(-121_000).kind_name(), "clock-skew-beyond-window");
        for kind in FAULT_KINDS {
            assert_eq!(FAULT_KINDS.iter().filter(|k| **k == kind).count(), 1);
        }
    }

    #[test]
    fn seeds_differ_in_which_faults_they_have() {
        let kinds: std::collections::BTreeSet<Vec<String>> = (0..40)
            .map(|seed| {
                let scenario = Scenario::draw(seed, &options());
                let mut names: Vec<String> = scenario
                    .faults
                    .iter()
                    .map(|event| serde_json::to_value(&event.fault).unwrap()["kind"].to_string())
                    .collect();
                names.sort();
                names.dedup();
                names
            })
            .collect();
        assert!(
            kinds.len() > 10,
            "only {} distinct fault mixes",
            kinds.len()
        );
    }
}
