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
}

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
/// Replays of a captured sealed request. Drawn after every other kind,
/// so that turning it on left the other events of every seed as they were.
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
        // Drawn last of all, for the same reason.
        let mut replays: Vec<u64> = (0..draw.count(&REPLAY))
            .map(|_| draw.rng.gen_range(0..draw.duration_ms))
            .collect();
        replays.sort_unstable();
        scenario.replays_at_ms = replays;
        let mut events = draw.events;
        events.sort_by_key(|event| event.at_ms);
        scenario.faults = events;
        scenario
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
