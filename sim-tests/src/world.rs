//! One seed, start to finish: builds the turmoil simulation (a broker, a
//! cache, the households, and the scenario's edges and cloud nodes), drives
//! it step by step while applying the fault timeline, heals, waits for
//! convergence within [`heal_bound`], and hands the evidence to the
//! checker.
//!
//! The harness owns the step loop (as s2's simulator and turmoil's cluster
//! example do): faults are applied between steps, and a host frozen at a
//! crash point is crashed at the next step, so the crash lands exactly
//! between the two effects the point separates; a cloud node armed to crash
//! with requests in flight is crashed at the first step boundary at which
//! it holds some. The broker's logs, the cache and each edge's SQLite file
//! live outside the hosts, so each survives the crashes it must survive and
//! the harness can read them. Each edge's SQLite sits on its own simulated
//! disk (`edgemeter-simdisk`): a power loss of that edge's host rolls it
//! back to what was synced before the process dies.
//!
//! Several edges ([`EdgeSite`]) each serve their own share of the slice's
//! households, read their own topic in their own consumer group, and ship
//! under their own id and key; several cloud nodes ([`NodeSite`]) run the
//! production `Cloud` on one shared cache, as deployed nodes share one
//! store.

use crate::broker::{run_broker, BrokerState, BROKER_HOST};
use crate::bus::{edge_group, SOCKET_TIMEOUT};
use crate::checker::{check_union, EdgeEvidence, Findings, Kind, UnionEvidence};
use crate::clock::Skew;
use crate::cloud_host::{run_cloud, CloudTally, InFlight};
use crate::dataset::{DataSet, Slice};
use crate::edge_host::{run_edge_host, CorruptionLog, EdgeSetup};
use crate::faults::{DiskError, Fault, Host, Scenario, Topology, INFLIGHT_ARM_MS_MAX};
use crate::forger::{run_forger, ForgerPlan, ForgerTally, ReplayPlan, FORGER_HOST, REPLAY_AGE_MS};
use crate::households::{run_households, ReplayProgress, StaleDuplicate};
use crate::link::LinkStats;
use crate::redis::{run_redis, CacheWorld, SharedCache, RECENT_TUPLES_MAX};
use crate::timeline::{timeline_of_kinds, Action};
use edgemeter_checker::OracleWindow;
use edgemeter_cloud::{CloudAuth, CloudConfig};
use edgemeter_edge::{EdgeConfig, EdgeMonitor};
use edgemeter_env::{Bug, CrashPoint, CrashPoints, PlantedBugs};
use edgemeter_simdisk::SimDisk;
use edgemeter_store::{SqliteOutbox, StoredTuple};
use edgemeter_wire::EdgeKey;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};
use tracing::{info, warn};

/// How long after the heal the system must have converged, on top of the
/// edge's idle flush (which legitimately holds the last windows open that
/// long after the last reading): every reading published and committed,
/// every tuple at flag 2. The slowest path after a heal is an edge restart,
/// its first heartbeat (1 s), the bus and uplink backoffs (at most 5 s
/// each) and the drain of the backlog: about 15 s. The bound leaves four
/// times that.
pub const HEAL_BOUND_BASE: Duration = Duration::from_secs(60);

/// The stated liveness bound for an edge with this idle flush. A broker
/// connection that lost a segment in a partition answers nothing until
/// the consumer gives it up after [`SOCKET_TIMEOUT`] (librdkafka's
/// `socket.timeout.ms`, which `KafkaBus` keeps; TCP would retransmit, but
/// a request lost in the broker is just as silent), so the bound includes
/// it.
pub fn heal_bound(idle_flush: Duration) -> Duration {
    HEAL_BOUND_BASE + SOCKET_TIMEOUT + idle_flush
}

/// How often convergence is checked after the heal.
pub const CONVERGENCE_POLL: Duration = Duration::from_millis(500);

/// How long the run continues after convergence, so that writes still in
/// flight land before the checker looks (the cloud's planted late write
/// takes 200 ms).
pub const SETTLE: Duration = Duration::from_secs(2);

/// The first edge's id, part of every tuple's identity in the cloud; edge
/// `n` (from 0) is [`edge_id`]`(n)`.
pub const EDGE_ID: &str = "edge-1";

/// The id of edge `index` (from 0): `edge-1`, `edge-2`, ...
pub fn edge_id(index: usize) -> String {
    format!("edge-{}", index + 1)
}

/// Segments a simulated TCP socket buffers; turmoil's default of 64 is
/// tight for a pipe carrying many in-flight batches.
pub const TCP_SEGMENTS_MAX: usize = 1024;

/// The links turmoil's random failures (`fail_rate`) apply to: the ones
/// the system must ride out whatever the length of a failure (every edge
/// to every cloud node and to the broker, every node to the cache). The
/// households' link to the broker is faulted only by explicit, bounded
/// events (broker outages, partitions, stalls; see
/// `faults::households_outage_ms_max`): the edge cannot tell a producer
/// cut off for longer than its idle flush from a finished stream, and
/// closing windows then is the documented cost of such a stall, not a bug.
/// Random failures have no bound on their length, so they stay off there.
pub fn failing_links(topology: &Topology) -> Vec<(Host, Host)> {
    let mut links = Vec::new();
    for edge in topology.edge_hosts() {
        links.extend(topology.node_hosts().map(|node| (edge, node)));
        links.push((edge, Host::Broker));
    }
    links.extend(topology.node_hosts().map(|node| (node, Host::Redis)));
    links
}

/// What happened in one seed, small enough to print and snapshot.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    pub seed: u64,
    pub mutation: Option<String>,
    pub households: usize,
    pub edges: usize,
    pub nodes: usize,
    pub shards: usize,
    pub readings: usize,
    pub windows: usize,
    pub faults: usize,
    pub edge_crashes: u32,
    /// Crashes of any cloud node, those with requests in flight included.
    pub cloud_crashes: u32,
    /// Cloud node crashes that found data requests in flight.
    pub inflight_crashes: u32,
    pub point_crashes: u32,
    pub cache_losses: u32,
    pub shard_losses: u32,
    pub power_losses: u32,
    pub broker_crashes: u32,
    /// Over every edge.
    pub edge_tuples: usize,
    pub acked: usize,
    /// Acknowledged tuples over every edge when the heal began: how far
    /// delivery got under the faults (a node down while another is up must
    /// not hold it back).
    pub acked_at_heal: u64,
    pub cloud_tuples: usize,
    pub link_requests: u64,
    pub link_resends: u64,
    pub link_breaks: u64,
    pub heal_at_ms: u64,
    pub converged_after_heal_ms: Option<u64>,
    pub sim_ms: u64,
    pub findings: BTreeMap<String, usize>,
    /// What the seed reached, as [`crate::coverage`] names it: the fault
    /// kinds it applied, the crash points that fired, the rare paths the
    /// edges and the cloud took.
    pub coverage: BTreeSet<String>,
}

/// Crash points armed by the schedule, and the hosts frozen at one.
#[derive(Debug, Default)]
struct CrashPlan {
    armed: BTreeMap<CrashPoint, u64>,
    /// (point, the host that reached it, its down time).
    frozen: Vec<(CrashPoint, Host, u64)>,
}

#[derive(Debug, Default)]
struct Tally {
    edge_crashes: u32,
    cloud_crashes: u32,
    inflight_crashes: u32,
    point_crashes: u32,
    cache_losses: u32,
    shard_losses: u32,
    power_losses: u32,
    broker_crashes: u32,
    /// Fault kinds of which at least one action was applied.
    kinds: BTreeSet<&'static str>,
    /// Crash points that fired.
    points: BTreeSet<&'static str>,
    /// A fault was still on when the replay ended.
    faults_at_end: bool,
}

/// One edge of the seed: its host, its identity, the households it serves
/// (through their oracle) and the disk under its SQLite.
struct EdgeSite {
    host: Host,
    edge_id: String,
    key: EdgeKey,
    topic: u32,
    group: String,
    /// The oracle of this edge's households only.
    oracle: BTreeMap<(String, i64), OracleWindow>,
    monitor: Arc<EdgeMonitor>,
    db_path: PathBuf,
    /// The disk under the edge's SQLite; detached (dropped) before its
    /// directory goes, which the field order guarantees.
    disk: SimDisk,
    _db_dir: tempfile::TempDir,
    /// What the edge's starts found wrong with its database.
    corruption: CorruptionLog,
    /// Acknowledged rows whose flag 2 a power loss undid: each is
    /// acknowledged again, legitimately, so the edge's count of
    /// acknowledgements may exceed its flag-2 rows by this much.
    acks_undone: u64,
    /// The edge host's wall-clock offset, and the skews on now (the
    /// latest started wins).
    skew: Skew,
    skews: Vec<i64>,
    /// The disk failures on now (an I/O error wins over full), and
    /// whether there is any, for the edge host's starts.
    disk_failures: Vec<DiskError>,
    disk_failing: Arc<std::sync::atomic::AtomicBool>,
}

/// One cloud node of the seed.
struct NodeSite {
    host: Host,
    /// Data requests the node holds (read, not yet answered), counted by
    /// its host; what [`Action::ArmInFlight`] waits for.
    in_flight: InFlight,
    /// The production cloud's counters, per incarnation.
    tally: CloudTally,
}

pub struct World {
    sim: turmoil::Sim<'static>,
    scenario: Scenario,
    slice: Slice,
    actions: Vec<(u64, Action, &'static str)>,
    next_action: usize,
    blocked: BTreeMap<(Host, Host), u32>,
    /// Holds in force per pair of hosts (the lower host first).
    held: BTreeMap<(Host, Host), u32>,
    down_until: BTreeMap<Host, u64>,
    spikes: Vec<u64>,
    plan: Arc<Mutex<CrashPlan>>,
    /// Cloud node -> (down time, when armed): crashed at the first step
    /// it has requests in flight, dropped after [`INFLIGHT_ARM_MS_MAX`].
    armed_in_flight: BTreeMap<u8, (u64, u64)>,
    broker: BrokerState,
    cache: SharedCache,
    progress: Arc<ReplayProgress>,
    link_stats: Arc<LinkStats>,
    /// What the cloud answered of the forger's forgeries and replays.
    forger_tally: Arc<ForgerTally>,
    edges: Vec<EdgeSite>,
    nodes: Vec<NodeSite>,
    /// Every host of the topology, in [`Topology::hosts`] order.
    hosts: Vec<Host>,
    heal_at_ms: u64,
    heal_bound_ms: u64,
    healed: bool,
    acked_at_heal: u64,
    converged_at_ms: Option<u64>,
    next_poll_ms: u64,
    tally: Tally,
    findings: Findings,
    /// Each host's address, looked up once: a lookup by name allocates
    /// and hashes the name, and the liveness check runs every step.
    addresses: BTreeMap<Host, IpAddr>,
}

/// The key of a pair of hosts in [`World::held`]: holds are both ways.
fn pair(a: Host, b: Host) -> (Host, Host) {
    (a.min(b), a.max(b))
}

fn planted_of(scenario: &Scenario) -> PlantedBugs {
    let bug = scenario
        .mutation
        .as_deref()
        .map(|name| Bug::from_name(name).unwrap_or_else(|| panic!("no planted bug named {name}")));
    bug.map_or(PlantedBugs::NONE, |bug| PlantedBugs::NONE.with(bug))
}

/// Edge `index`'s secret, derived from the seed: the simulation runs the
/// authenticated path the deployment runs, reproducibly. The first edge's
/// is the one the single-edge world used; each other edge has its own.
fn edge_key(seed: u64, index: usize) -> EdgeKey {
    let seed = seed ^ (index as u64).wrapping_mul(0xd1b5_4a32_d192_ed03);
    let mut bytes = [0u8; 32];
    for (index, chunk) in bytes.chunks_mut(8).enumerate() {
        let word = seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(index as u32 * 16)
            ^ index as u64;
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    EdgeKey::from_bytes(bytes)
}

/// The crash points of one host: whichever host reaches an armed point
/// first freezes there (edges reach the edge points, nodes the cloud's).
fn crash_points(plan: &Arc<Mutex<CrashPlan>>, host: Host) -> CrashPoints {
    let plan = plan.clone();
    CrashPoints::hooked(Arc::new(move |point| {
        let mut plan = plan.lock().expect("plan lock");
        match plan.armed.remove(&point) {
            Some(down_ms) => {
                plan.frozen.push((point, host, down_ms));
                info!(target: "sim::faults", point = point.name(), host = host.name(), "host froze at crash point");
                true
            }
            None => false,
        }
    }))
}

fn build_sim(scenario: &Scenario, epoch_ms: i64) -> turmoil::Sim<'static> {
    let network = &scenario.network;
    assert!(network.latency_max_ms >= network.latency_min_ms);
    assert!(scenario.tick_ms > 0);
    turmoil::Builder::new()
        .rng_seed(scenario.seed)
        .epoch(UNIX_EPOCH + Duration::from_millis(epoch_ms.max(0) as u64))
        .tick_duration(Duration::from_millis(scenario.tick_ms))
        .simulation_duration(Duration::from_secs(365 * 24 * 3600))
        .min_message_latency(Duration::from_millis(network.latency_min_ms))
        .max_message_latency(Duration::from_millis(network.latency_max_ms))
        .repair_rate(f64::from(network.repair_rate_ppm) / 1e6)
        .tcp_capacity(TCP_SEGMENTS_MAX)
        .build()
}

/// Where a seed keeps an edge's SQLite: in memory-backed `/dev/shm` when
/// the machine has it, else the temporary directory. Power loss is the
/// simulated disk's (`edgemeter-simdisk`), which keeps what a sync would
/// have made durable; a real disk's fsync would only cost wall time.
fn seed_dir() -> tempfile::TempDir {
    let builder = {
        let mut builder = tempfile::Builder::new();
        builder.prefix("edgemeter-sim-");
        builder
    };
    builder
        .tempdir_in("/dev/shm")
        .or_else(|_| builder.tempdir())
        .expect("a temporary directory for the edge's SQLite")
}

/// Which edge serves each household of the slice: dealt round-robin in
/// the slice's order, so each edge has at least one (the topology has no
/// more edges than households) and the shares differ by one at most.
fn edge_of_households(slice: &Slice, edges: usize) -> BTreeMap<String, usize> {
    assert!(edges >= 1);
    slice
        .households
        .iter()
        .enumerate()
        .map(|(index, household)| (household.node_id.clone(), index % edges))
        .collect()
}

impl EdgeSite {
    fn new(seed: u64, index: usize, oracle: BTreeMap<(String, i64), OracleWindow>) -> EdgeSite {
        let db_dir = seed_dir();
        let disk = SimDisk::attach(db_dir.path()).expect("a simulated disk for the edge");
        EdgeSite {
            host: Host::Edge(index as u8),
            edge_id: edge_id(index),
            key: edge_key(seed, index),
            topic: index as u32,
            group: edge_group(index),
            oracle,
            monitor: Arc::new(EdgeMonitor::new()),
            db_path: disk.dir().join("edge.db"),
            disk,
            _db_dir: db_dir,
            corruption: CorruptionLog::default(),
            acks_undone: 0,
            skew: Skew::default(),
            skews: Vec::new(),
            disk_failures: Vec::new(),
            disk_failing: Arc::default(),
        }
    }
}

impl World {
    pub fn new(scenario: &Scenario, data: &DataSet) -> World {
        let slice = Slice::cut(data, scenario);
        let topology = scenario.topology.clamped(slice.households.len());
        let owner = edge_of_households(&slice, topology.edges);
        let mut oracles: Vec<BTreeMap<(String, i64), OracleWindow>> =
            vec![BTreeMap::new(); topology.edges];
        for (key, window) in &slice.oracle {
            oracles[owner[&key.0]].insert(key.clone(), *window);
        }
        let edges = oracles
            .into_iter()
            .enumerate()
            .map(|(index, oracle)| EdgeSite::new(scenario.seed, index, oracle))
            .collect();
        let nodes = topology
            .node_hosts()
            .map(|host| NodeSite {
                host,
                in_flight: InFlight::default(),
                tally: CloudTally::default(),
            })
            .collect();
        let mut scenario = scenario.clone();
        scenario.topology = topology;
        let mut world = World {
            sim: build_sim(&scenario, slice.epoch_ms),
            actions: timeline_of_kinds(&scenario.faults, scenario.heal_at_ms(), &topology),
            heal_at_ms: scenario.heal_at_ms(),
            slice,
            next_action: 0,
            blocked: BTreeMap::new(),
            held: BTreeMap::new(),
            down_until: BTreeMap::new(),
            spikes: Vec::new(),
            plan: Arc::new(Mutex::new(CrashPlan::default())),
            armed_in_flight: BTreeMap::new(),
            broker: {
                let broker = BrokerState::new(topology.edges);
                let crashes_broker = scenario
                    .faults
                    .iter()
                    .any(|event| matches!(event.fault, Fault::BrokerCrash { .. }));
                if crashes_broker {
                    broker.with_ack_delay()
                } else {
                    broker
                }
            },
            cache: Rc::new(RefCell::new(CacheWorld::new(planted_of(&scenario)))),
            progress: Arc::new(ReplayProgress::default()),
            link_stats: Arc::new(LinkStats::default()),
            forger_tally: Arc::new(ForgerTally::default()),
            edges,
            nodes,
            hosts: topology.hosts(),
            heal_bound_ms: 0,
            healed: false,
            acked_at_heal: 0,
            converged_at_ms: None,
            next_poll_ms: 0,
            tally: Tally::default(),
            findings: Findings::default(),
            addresses: BTreeMap::new(),
            scenario,
        };
        world.register_hosts(&owner);
        world.addresses = world
            .hosts
            .iter()
            .map(|host| (*host, world.sim.lookup(host.name())))
            .collect();
        world.set_fail_rate(f64::from(world.scenario.network.fail_rate_ppm) / 1e6);
        world
    }

    fn topology(&self) -> Topology {
        self.scenario.topology
    }

    fn register_hosts(&mut self, owner: &BTreeMap<String, usize>) {
        let broker = self.broker.clone();
        self.sim
            .host(BROKER_HOST, move || run_broker(broker.clone()));
        let cache = self.cache.clone();
        self.sim
            .host(Host::Redis.name(), move || run_redis(cache.clone()));
        for node in 0..self.nodes.len() {
            self.register_node(node);
        }
        if let Some(plan) = self.forger_plan() {
            let tally = self.forger_tally.clone();
            self.sim
                .host(FORGER_HOST, move || run_forger(plan.clone(), tally.clone()));
        }
        for edge in 0..self.edges.len() {
            self.register_edge(edge);
        }
        let topics: Vec<u32> = self
            .slice
            .publications
            .iter()
            .map(|publication| {
                let node_id = std::str::from_utf8(&publication.key).expect("a household id");
                owner[node_id] as u32
            })
            .collect();
        let topics = Arc::new(topics);
        let (publications, progress) = (self.slice.publications.clone(), self.progress.clone());
        let planted = planted_of(&self.scenario);
        // The stale duplicates before the heal, sent by the households host
        // itself (it is never crashed, so its schedule is fixed at start).
        let stale: Vec<StaleDuplicate> = self
            .actions
            .iter()
            .filter_map(|(at_ms, action, _)| match action {
                Action::StaleDuplicate { age_ms } => Some(StaleDuplicate {
                    at: Duration::from_millis(*at_ms),
                    age: Duration::from_millis(*age_ms),
                }),
                _ => None,
            })
            .collect();
        let stale = Arc::new(stale);
        self.sim.host(Host::Households.name(), move || {
            run_households(
                publications.clone(),
                topics.clone(),
                progress.clone(),
                planted,
                stale.clone(),
            )
        });
    }

    /// Cloud node `node`: the production `Cloud`, holding every edge's key.
    fn register_node(&mut self, node: usize) {
        let planted = planted_of(&self.scenario);
        let epoch_ms = self.slice.epoch_ms;
        // Seeds with forgeries run the cloud in mixed mode, where an
        // unsealed request in a keyed edge's name must still be refused.
        let forgeries = !self.scenario.forgeries_at_ms.is_empty();
        let mut auth = CloudAuth {
            allow_unauthenticated: forgeries,
            ..CloudAuth::open()
        };
        for edge in &self.edges {
            auth = auth.with_key(&edge.edge_id, edge.key.clone());
        }
        let site = &self.nodes[node];
        let cloud_config = CloudConfig {
            auth,
            planted,
            crash_points: crash_points(&self.plan, site.host),
            // The first node draws what the single-node world's cloud drew.
            rng_seed: self.scenario.seed ^ (node as u64).wrapping_mul(0xa076_1d64_78bd_642f),
            ..CloudConfig::default()
        };
        // Each start of a node draws other epoch candidates, as a
        // deployment's OS randomness does: a restarted node drawing its
        // predecessor's would give a lost store its old epoch back.
        let incarnations = Arc::new(AtomicU64::new(0));
        let (in_flight, tally) = (site.in_flight.clone(), site.tally.clone());
        self.sim.host(site.host.name(), move || {
            let mut config = cloud_config.clone();
            let incarnation = incarnations.fetch_add(1, Ordering::Relaxed);
            config.rng_seed ^= incarnation.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            run_cloud(config, epoch_ms, in_flight.clone(), tally.clone())
        });
    }

    /// Edge `index`: the production `run_edge` on its own disk and topic.
    fn register_edge(&mut self, index: usize) {
        let planted = planted_of(&self.scenario);
        let site = &self.edges[index];
        let mut edge_config = EdgeConfig::new(&site.edge_id);
        edge_config.planted = planted;
        edge_config.key = Some(site.key.clone());
        edge_config.crash_points = crash_points(&self.plan, site.host);
        if let Some(idle_flush_ms) = self.scenario.edge_idle_flush_ms {
            edge_config.idle_flush = Duration::from_millis(idle_flush_ms);
        }
        self.heal_bound_ms = heal_bound(edge_config.idle_flush).as_millis() as u64;
        let setup = EdgeSetup {
            config: edge_config,
            db_path: site.db_path.clone(),
            topic: site.topic,
            group: site.group.clone(),
            nodes: self
                .topology()
                .node_hosts()
                .map(|host| host.name().to_owned())
                .collect(),
            planted,
            epoch_ms: self.slice.epoch_ms,
            monitor: site.monitor.clone(),
            link_stats: self.link_stats.clone(),
            corruption: site.corruption.clone(),
            skew: site.skew.clone(),
            disk_failing: site.disk_failing.clone(),
        };
        // Each start of an edge is a new process with a new instance, as
        // the `edge` command draws one from the OS: a restarted edge must
        // wait out its predecessor's lease. Derived from the seed and the
        // site, so a run replays.
        let edge_starts = Arc::new(AtomicU64::new(0));
        let base = (self.scenario.seed ^ 0x5eed_ed9e)
            .wrapping_add((index as u64).wrapping_mul(0xd1b5_4a32_d192_ed03));
        self.sim.host(site.host.name(), move || {
            let mut setup = setup.clone();
            let start = edge_starts.fetch_add(1, Ordering::Relaxed);
            setup.config.instance = base
                .wrapping_add(start.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .max(1);
            run_edge_host(setup)
        });
    }

    /// The forgeries the scenario draws: a real window with another
    /// average, and one past the slice, both in the keyed edge's name.
    fn forger_plan(&self) -> Option<ForgerPlan> {
        if self.scenario.forgeries_at_ms.is_empty() && self.scenario.replays_at_ms.is_empty() {
            return None;
        }
        // A window of the first edge's, in that edge's name: stored first,
        // it makes the edge's own tuple a conflict.
        let ((node_id, window_start_ms), window) = self.edges[0].oracle.iter().next()?;
        let end_ms = self.slice.epoch_ms + self.scenario.duration_ms;
        let past_ms = (end_ms.div_euclid(5_000) + 720) * 5_000;
        let forged = |tuple_id, window_start_ms, average_w| edgemeter_wire::TupleOut {
            tuple_id,
            node_id: node_id.clone(),
            window_start_ms,
            average_w,
            samples: 1,
        };
        // A request captured a day ago: sealed then, for a window of then.
        let replay = (!self.scenario.replays_at_ms.is_empty()).then(|| {
            let day_ago_ms = (self.slice.epoch_ms - REPLAY_AGE_MS).div_euclid(5_000) * 5_000;
            ReplayPlan {
                at_ms: self.scenario.replays_at_ms.clone(),
                key: self.edges[0].key.clone(),
                sent_ms: day_ago_ms + 7_000,
                tuples: vec![forged(1, day_ago_ms, window.average_w)],
            }
        });
        Some(ForgerPlan {
            edge_id: EDGE_ID.to_owned(),
            at_ms: self.scenario.forgeries_at_ms.clone(),
            tuples: vec![
                forged(1, *window_start_ms, window.average_w + 1_000.0),
                forged(2, past_ms, 1.0),
            ],
            replay,
        })
    }

    /// Runs the seed to its end and checks it.
    pub fn run(mut self) -> (Summary, Findings) {
        crate::trace::set_harness_now(0);
        info!(target: "sim::faults", schedule = %serde_json::to_string(&self.scenario).expect("serializes"), "scenario");
        loop {
            let now_ms = self.sim.elapsed().as_millis() as u64;
            crate::trace::set_harness_now(now_ms);
            self.apply_due_actions(now_ms);
            self.restart_due_hosts(now_ms);
            if !self.healed && now_ms >= self.scenario.duration_ms.max(0) as u64 {
                self.note_faults_at_end();
            }
            if !self.healed && now_ms >= self.heal_at_ms {
                self.heal();
            }
            if self.healed && self.finished(now_ms) {
                break;
            }
            if let Err(error) = self.sim.step() {
                self.findings
                    .add(Kind::Crashed, || format!("a host failed: {error}"));
                warn!(target: "sim::check", %error, "a host failed; the run stops");
                break;
            }
            self.crash_frozen_hosts();
            self.crash_nodes_in_flight();
            self.check_hosts_alive();
        }
        self.conclude()
    }
}

impl World {
    fn apply_due_actions(&mut self, now_ms: u64) {
        while let Some((at, action, kind)) = self.actions.get(self.next_action).cloned() {
            if at > now_ms {
                return;
            }
            self.next_action += 1;
            // A crash point or an in-flight crash counts once it fires.
            if !matches!(action, Action::Arm { .. } | Action::ArmInFlight { .. }) {
                self.tally.kinds.insert(kind);
            }
            self.apply(action, now_ms);
        }
    }

    fn apply(&mut self, action: Action, now_ms: u64) {
        match action {
            Action::Block { from, to } => {
                *self.blocked.entry((from, to)).or_default() += 1;
                info!(target: "sim::faults", from = from.name(), to = to.name(), "partition: traffic dropped");
                self.apply_link(from, to);
            }
            Action::Unblock { from, to } => {
                let count = self.blocked.entry((from, to)).or_default();
                *count = count.saturating_sub(1);
                if *count == 0 {
                    info!(target: "sim::faults", from = from.name(), to = to.name(), "partition lifted");
                }
                self.apply_link(from, to);
            }
            Action::Crash { host, down_ms } => self.crash(host, now_ms, down_ms),
            Action::Arm { point, down_ms } => {
                info!(target: "sim::faults", point = point.name(), "crash point armed");
                self.plan
                    .lock()
                    .expect("plan lock")
                    .armed
                    .insert(point, down_ms);
            }
            Action::ArmInFlight { node, down_ms } => {
                info!(target: "sim::faults", node = Host::Cloud(node).name(), "crash armed for requests in flight");
                self.armed_in_flight.insert(node, (down_ms, now_ms));
            }
            Action::LoseCache { down_ms } => {
                self.crash(Host::Redis, now_ms, down_ms);
                self.cache.borrow_mut().lose();
                self.tally.cache_losses += 1;
                info!(target: "sim::faults", down_ms, "cache lost: redis restarts empty");
            }
            Action::LoseShard { shard } => self.lose_shard(shard),
            Action::SpikeStart { max_ms } => {
                self.spikes.push(max_ms);
                self.apply_latency();
            }
            Action::Hold { host, peer } => {
                *self.held.entry(pair(host, peer)).or_default() += 1;
                info!(target: "sim::faults", host = host.name(), peer = peer.name(), "stall: messages held");
                self.apply_link(host, peer);
            }
            Action::Release { host, peer } => {
                let count = self.held.entry(pair(host, peer)).or_default();
                *count = count.saturating_sub(1);
                if *count == 0 {
                    info!(target: "sim::faults", host = host.name(), peer = peer.name(), "stall over: held messages delivered");
                }
                self.apply_link(host, peer);
            }
            Action::SpikeEnd { max_ms } => {
                if let Some(index) = self.spikes.iter().position(|spike| *spike == max_ms) {
                    self.spikes.remove(index);
                }
                self.apply_latency();
            }
            Action::PowerLoss {
                edge,
                down_ms,
                kept_percent,
            } => self.power_loss(usize::from(edge), now_ms, down_ms, kept_percent),
            Action::StaleDuplicate { .. } => {}
            Action::SkewStart { edge, offset_ms } => {
                let site = &mut self.edges[usize::from(edge)];
                site.skews.push(offset_ms);
                site.skew.set(offset_ms);
                info!(target: "sim::faults", edge = site.host.name(), offset_ms, "clock skew: the edge's wall clock is off");
            }
            Action::SkewEnd { edge, offset_ms } => {
                let site = &mut self.edges[usize::from(edge)];
                if let Some(index) = site.skews.iter().position(|skew| *skew == offset_ms) {
                    site.skews.remove(index);
                }
                let now = site.skews.last().copied().unwrap_or(0);
                site.skew.set(now);
                info!(target: "sim::faults", edge = site.host.name(), offset_ms = now, "clock skew over");
            }
            Action::DiskFail { edge, failure } => {
                let site = &mut self.edges[usize::from(edge)];
                site.disk_failures.push(failure);
                set_disk_failure(site);
                info!(target: "sim::faults", edge = site.host.name(), ?failure, "disk fails");
            }
            Action::DiskRepair { edge, failure } => {
                let site = &mut self.edges[usize::from(edge)];
                if let Some(index) = site.disk_failures.iter().position(|f| *f == failure) {
                    site.disk_failures.remove(index);
                }
                set_disk_failure(site);
                info!(target: "sim::faults", edge = site.host.name(), ?failure, "disk failure over");
            }
        }
    }

    /// Records, once, whether any fault is still on as the replay ends.
    fn note_faults_at_end(&mut self) {
        if self.tally.faults_at_end {
            return;
        }
        let on = |counts: &BTreeMap<(Host, Host), u32>| counts.values().any(|count| *count > 0);
        let active = on(&self.blocked)
            || on(&self.held)
            || !self.down_until.is_empty()
            || !self.spikes.is_empty()
            || self
                .edges
                .iter()
                .any(|edge| !edge.skews.is_empty() || !edge.disk_failures.is_empty());
        if active && self.heal_at_ms > self.scenario.duration_ms.max(0) as u64 {
            self.tally.faults_at_end = true;
            info!(target: "sim::faults", "faults still on as the replay ends");
        }
    }

    /// Shard `shard` of the cache restarts empty: the keys and epochs of
    /// the buckets it owns are gone; the other shards' stay. The cache is
    /// one simulated host, so the shard's restart costs the other shards
    /// no availability (a Redis Cluster client sees only that shard's
    /// slots fail over).
    fn lose_shard(&mut self, shard: u8) {
        let buckets = self.topology().buckets_of(usize::from(shard));
        let mut cache = self.cache.borrow_mut();
        let held_before = cache.held_tuples().len();
        cache.lose_buckets(&buckets.iter().copied().collect());
        let tuples_lost = held_before - cache.held_tuples().len();
        drop(cache);
        self.tally.shard_losses += 1;
        info!(target: "sim::faults", shard, ?buckets, tuples_lost, "cache shard lost: its buckets restart empty");
    }

    /// Crashes every armed cloud node that now holds data requests in
    /// flight; drops arms that waited past [`INFLIGHT_ARM_MS_MAX`].
    fn crash_nodes_in_flight(&mut self) {
        if self.armed_in_flight.is_empty() {
            return;
        }
        let now_ms = self.sim.elapsed().as_millis() as u64;
        crate::trace::set_harness_now(now_ms);
        let armed: Vec<(u8, (u64, u64))> = self
            .armed_in_flight
            .iter()
            .map(|(node, arm)| (*node, *arm))
            .collect();
        for (node, (down_ms, armed_at_ms)) in armed {
            let host = Host::Cloud(node);
            let in_flight = self.nodes[usize::from(node)].in_flight.get();
            if in_flight > 0 && !self.down_until.contains_key(&host) {
                self.armed_in_flight.remove(&node);
                self.tally.inflight_crashes += 1;
                self.tally.kinds.insert("crash-node-in-flight");
                info!(target: "sim::faults", node = host.name(), in_flight, "crash with requests in flight");
                self.crash(host, now_ms, down_ms);
            } else if now_ms >= armed_at_ms + INFLIGHT_ARM_MS_MAX {
                self.armed_in_flight.remove(&node);
                info!(target: "sim::faults", node = host.name(), "no requests in flight in time: crash dropped");
            }
        }
    }

    /// An edge host loses power: its disk falls back to what was synced
    /// (and a seeded share of the rest), then its process dies, so that its
    /// connection never runs on the rolled-back files.
    fn power_loss(&mut self, edge: usize, now_ms: u64, down_ms: u64, kept_percent: u8) {
        let acked_before = self.acked_rows(edge);
        let seed = self.scenario.seed ^ now_ms.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let loss = self.edges[edge]
            .disk
            .power_loss(seed, kept_percent)
            .expect("the simulated disk rolls back");
        self.crash(self.edges[edge].host, now_ms, down_ms);
        let undone = acked_before.saturating_sub(self.acked_rows(edge));
        self.edges[edge].acks_undone += undone;
        self.tally.power_losses += 1;
        info!(target: "sim::faults", edge = self.edges[edge].host.name(), down_ms, kept_percent, sectors_lost = loss.sectors_lost, sectors_kept = loss.sectors_kept, "power loss of an edge host");
    }

    /// Rows at flag 2 in edge `edge`'s database as it is on the disk now.
    ///
    /// The harness reads the database with SQLite's default VFS while the
    /// edge writes through the simulated disk's: that is sound, because the
    /// shim forwards to that same unix VFS, whose per-process locks and
    /// shared memory both connections share, and a read-only connection
    /// writes nothing the disk would have to roll back (at most the `-shm`
    /// index, which is rebuilt from the files anyway).
    fn acked_rows(&self, edge: usize) -> u64 {
        let path = &self.edges[edge].db_path;
        if !path.exists() {
            return 0;
        }
        let counted = SqliteOutbox::open_read_only(path)
            .and_then(|mut outbox| edgemeter_edge::Outbox::status(&mut outbox));
        match counted {
            Ok(counts) => counts.acked,
            Err(error) => {
                warn!(target: "sim::check", %error, "the edge's database cannot be counted");
                0
            }
        }
    }

    fn set_fail_rate(&mut self, rate: f64) {
        for (a, b) in failing_links(&self.topology()) {
            self.sim.set_link_fail_rate(a.name(), b.name(), rate);
        }
    }

    fn apply_latency(&mut self) {
        let base = self.scenario.network.latency_max_ms;
        let max_ms = self.spikes.iter().copied().max().unwrap_or(base).max(base);
        info!(target: "sim::faults", max_ms, "message latency set");
        self.sim
            .set_max_message_latency(Duration::from_millis(max_ms));
    }

    /// Sets the turmoil link between two hosts from the two block counts
    /// and the hold count. A block wins over a hold (turmoil cannot combine
    /// a one-way partition with a hold): the held messages are then dropped.
    fn apply_link(&mut self, a: Host, b: Host) {
        let forward = self.blocked.get(&(a, b)).copied().unwrap_or(0) > 0;
        let backward = self.blocked.get(&(b, a)).copied().unwrap_or(0) > 0;
        let held = self.held.get(&pair(a, b)).copied().unwrap_or(0) > 0;
        if held && !forward && !backward {
            self.sim.hold(a.name(), b.name());
            return;
        }
        // Healthy again, delivering whatever was held; then the blocks.
        self.sim.release(a.name(), b.name());
        self.sim.repair(a.name(), b.name());
        match (forward, backward) {
            (true, true) => self.sim.partition(a.name(), b.name()),
            (true, false) => self.sim.partition_oneway(a.name(), b.name()),
            (false, true) => self.sim.partition_oneway(b.name(), a.name()),
            (false, false) => {}
        }
    }

    fn crash(&mut self, host: Host, now_ms: u64, down_ms: u64) {
        let until = now_ms + down_ms;
        if let Some(current) = self.down_until.get_mut(&host) {
            *current = (*current).max(until);
            return;
        }
        if let Host::Edge(edge) = host {
            // A killed process runs no cleanup: its SQLite connection,
            // dropped with the host, must not checkpoint on close.
            self.edges[usize::from(edge)].disk.process_crash();
        }
        self.sim.crash(host.name());
        self.down_until.insert(host, until);
        match host {
            Host::Edge(_) => self.tally.edge_crashes += 1,
            Host::Cloud(_) => self.tally.cloud_crashes += 1,
            Host::Broker => self.tally.broker_crashes += 1,
            _ => {}
        }
        info!(target: "sim::faults", host = host.name(), down_ms, "crash");
    }

    fn restart_due_hosts(&mut self, now_ms: u64) {
        let due: Vec<Host> = self
            .down_until
            .iter()
            .filter(|(_, until)| **until <= now_ms)
            .map(|(host, _)| *host)
            .collect();
        for host in due {
            self.down_until.remove(&host);
            self.sim.bounce(host.name());
            info!(target: "sim::faults", host = host.name(), "restart");
        }
    }

    fn crash_frozen_hosts(&mut self) {
        let frozen = std::mem::take(&mut self.plan.lock().expect("plan lock").frozen);
        let now_ms = self.sim.elapsed().as_millis() as u64;
        crate::trace::set_harness_now(now_ms);
        for (point, host, down_ms) in frozen {
            self.tally.point_crashes += 1;
            self.tally.points.insert(point.name());
            self.tally.kinds.insert("crash-at-point");
            info!(target: "sim::faults", point = point.name(), host = host.name(), "crash at crash point");
            self.crash(host, now_ms, down_ms);
        }
    }

    /// A host that stopped although the harness did not crash it panicked
    /// or returned: that is a finding, reported once. (The households host
    /// returns when its replay is done.)
    fn check_hosts_alive(&mut self) {
        for index in 0..self.hosts.len() {
            let host = self.hosts[index];
            if host == Host::Households
                || self.down_until.contains_key(&host)
                || self.sim.is_host_running(self.addresses[&host])
            {
                continue;
            }
            self.findings.add(Kind::Crashed, || {
                format!("host {} stopped on its own", host.name())
            });
            warn!(target: "sim::check", host = host.name(), "host stopped on its own");
            self.down_until.insert(host, u64::MAX);
        }
    }

    /// All faults off: links repaired, failure rate zero, latency back to
    /// base, crash points and in-flight crashes disarmed, crashed hosts
    /// restarted now.
    fn heal(&mut self) {
        self.healed = true;
        self.acked_at_heal = (0..self.edges.len())
            .map(|edge| self.acked_rows(edge))
            .sum();
        self.next_action = self.actions.len();
        self.blocked.clear();
        self.held.clear();
        for (index, a) in self.hosts.iter().enumerate() {
            for b in &self.hosts[index + 1..] {
                // Release delivers held messages; repair alone would leave
                // them held for good.
                self.sim.release(a.name(), b.name());
                self.sim.repair(a.name(), b.name());
            }
        }
        self.set_fail_rate(0.0);
        self.spikes.clear();
        self.sim
            .set_max_message_latency(Duration::from_millis(self.scenario.network.latency_max_ms));
        self.plan.lock().expect("plan lock").armed.clear();
        self.armed_in_flight.clear();
        // Clocks agree and disks work again: a skew or a failing disk that
        // never ends is a machine to repair, not a state to converge in.
        for edge in &mut self.edges {
            edge.skews.clear();
            edge.skew.set(0);
            edge.disk_failures.clear();
            set_disk_failure(edge);
        }
        for until in self.down_until.values_mut() {
            if *until != u64::MAX {
                *until = 0;
            }
        }
        self.next_poll_ms = self.heal_at_ms;
        info!(target: "sim::faults", "heal: every fault is off");
    }
}

impl World {
    /// After the heal: true once the run should stop (converged and
    /// settled, or past the bound).
    fn finished(&mut self, now_ms: u64) -> bool {
        if let Some(at) = self.converged_at_ms {
            return now_ms >= at + SETTLE.as_millis() as u64;
        }
        if now_ms >= self.next_poll_ms {
            self.next_poll_ms = now_ms + CONVERGENCE_POLL.as_millis() as u64;
            match self.convergence() {
                Ok(()) => {
                    info!(target: "sim::check", after_heal_ms = now_ms - self.heal_at_ms, "converged");
                    self.converged_at_ms = Some(now_ms);
                    return false;
                }
                Err(waiting) if now_ms >= self.heal_at_ms + self.heal_bound_ms => {
                    self.findings.add(Kind::Stuck, || {
                        format!(
                            "not converged {} s after the heal: {waiting}",
                            self.heal_bound_ms / 1000
                        )
                    });
                    warn!(target: "sim::check", %waiting, "not converged within the bound");
                    return true;
                }
                Err(_) => {}
            }
        }
        false
    }

    /// `Ok` when nothing is left to do; otherwise what is still pending.
    fn convergence(&self) -> Result<(), String> {
        if let Some(host) = self.down_until.keys().next() {
            return Err(format!("{} is down", host.name()));
        }
        let published = self.progress.published.load(Ordering::Relaxed) as usize;
        if published < self.slice.publications.len() {
            return Err(format!(
                "{published} of {} readings published",
                self.slice.publications.len()
            ));
        }
        for edge in &self.edges {
            if !self.broker.fully_committed(edge.topic, &edge.group) {
                return Err(format!("{} has not committed every offset", edge.edge_id));
            }
        }
        if self.slice.publications.is_empty() {
            return Ok(());
        }
        for edge in &self.edges {
            self.edge_convergence(edge)
                .map_err(|waiting| format!("{}: {waiting}", edge.edge_id))?;
        }
        Ok(())
    }

    /// One edge's part of [`World::convergence`]: nothing left to ship,
    /// and nothing a cache loss took left to ship again.
    fn edge_convergence(&self, edge: &EdgeSite) -> Result<(), String> {
        // The pending rows only, through their partial index: counting the
        // whole table every poll made the wait after the heal cost in
        // proportion to everything stored.
        let outbox = SqliteOutbox::open_read_only(&edge.db_path).map_err(|e| e.to_string())?;
        match outbox.unacked_count().map_err(|error| error.to_string())? {
            0 => {}
            pending => return Err(format!("{pending} tuples not yet acknowledged")),
        }
        // A store that forgot (whole, or one shard's buckets) must have
        // been refilled: every acknowledged tuple acknowledged under a
        // current bucket epoch, or under the digest of them all (what an
        // edge of the older wire versions is told).
        let epochs = self.cache.borrow().epochs();
        let Some(digest) = edgemeter_wire::bucket::epochs_digest(&epochs) else {
            return Err("a cache bucket has no epoch yet".to_owned());
        };
        match acked_not_under_any(&edge.db_path, &epochs, digest)? {
            0 => Ok(()),
            left => Err(format!(
                "{left} acknowledged tuples not yet shipped again under the cache's epochs"
            )),
        }
    }

    /// Every edge's rows, in edge order.
    fn edge_rows(&self) -> Vec<Vec<StoredTuple>> {
        self.edges
            .iter()
            .map(|edge| {
                SqliteOutbox::open_read_only(&edge.db_path)
                    .and_then(|outbox| outbox.all_tuples())
                    .unwrap_or_default()
            })
            .collect()
    }

    fn conclude(mut self) -> (Summary, Findings) {
        let edge_rows = self.edge_rows();
        let cache = self.cache.borrow();
        let cloud = cache.held_tuples();
        // The readers' own calls: an error here is the checker's business
        // (the totals cannot be read), never a panic.
        let state_totals = cache.state_totals().unwrap_or_default();
        let edge_records = cache.edges().unwrap_or_default();
        let recent = cache.recent_tuples(RECENT_TUPLES_MAX).unwrap_or_default();
        let household_sets = cache.household_sets();
        drop(cache);
        let evidence: Vec<EdgeEvidence<'_>> = self
            .edges
            .iter()
            .zip(&edge_rows)
            .map(|(edge, rows)| EdgeEvidence {
                edge_id: &edge.edge_id,
                oracle: &edge.oracle,
                edge_rows: rows,
            })
            .collect();
        let mut checked = check_union(&UnionEvidence {
            edges: &evidence,
            cloud: &cloud,
            state_totals: Some(&state_totals),
            edge_records: Some(&edge_records),
            recent: Some(&recent),
            household_sets: Some(&household_sets),
        });
        drop(evidence);
        for (edge, rows) in self.edges.iter().zip(&edge_rows) {
            check_edge_counters(edge, rows, &mut checked);
        }
        self.findings.merge(checked);
        self.log_findings();
        let summary = self.summary(&edge_rows, cloud.len());
        (summary, self.findings)
    }

    fn log_findings(&self) {
        if self.findings.is_clean() {
            info!(target: "sim::check", "checker: no violation");
        }
        for (kind, (count, examples)) in &self.findings.by_kind {
            for example in examples {
                warn!(target: "sim::check", kind = kind.name(), count, "{example}");
            }
        }
    }

    fn summary(&self, edge_rows: &[Vec<StoredTuple>], cloud_tuples: usize) -> Summary {
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        let rows = || edge_rows.iter().flatten();
        let topology = self.topology();
        Summary {
            seed: self.scenario.seed,
            mutation: self.scenario.mutation.clone(),
            households: self.slice.households.len(),
            edges: topology.edges,
            nodes: topology.nodes,
            shards: topology.shards,
            readings: self.slice.publications.len(),
            windows: self.slice.oracle.len(),
            faults: self.scenario.faults.len(),
            edge_crashes: self.tally.edge_crashes,
            cloud_crashes: self.tally.cloud_crashes,
            inflight_crashes: self.tally.inflight_crashes,
            point_crashes: self.tally.point_crashes,
            cache_losses: self.tally.cache_losses,
            shard_losses: self.tally.shard_losses,
            power_losses: self.tally.power_losses,
            broker_crashes: self.tally.broker_crashes,
            edge_tuples: rows().count(),
            acked: rows().filter(|row| row.sent == 2).count(),
            acked_at_heal: self.acked_at_heal,
            cloud_tuples,
            link_requests: load(&self.link_stats.requests),
            link_resends: load(&self.link_stats.resends),
            link_breaks: load(&self.link_stats.breaks),
            heal_at_ms: self.heal_at_ms,
            converged_after_heal_ms: self.converged_at_ms.map(|at| at - self.heal_at_ms),
            sim_ms: self.sim.elapsed().as_millis() as u64,
            findings: self.findings.counts(),
            coverage: self.coverage(),
        }
    }

    /// What this seed reached ([`crate::coverage`]), from what happened:
    /// the actions applied, the crash points that fired, and the edges' and
    /// cloud nodes' own counters.
    fn coverage(&self) -> BTreeSet<String> {
        let edges: Vec<edgemeter_edge::EdgeCounters> = self
            .edges
            .iter()
            .map(|edge| edge.monitor.snapshot())
            .collect();
        let clouds: Vec<edgemeter_cloud::CloudCounters> = self
            .nodes
            .iter()
            .flat_map(|node| node.tally.incarnations())
            .collect();
        let disk_refusals: u64 = self
            .edges
            .iter()
            .map(|edge| edge.disk.failed_operations())
            .sum();
        let mut kinds = self.tally.kinds.clone();
        let forger = &self.forger_tally;
        if forger.forgeries_answered.load(Ordering::Relaxed) > 0 {
            kinds.insert("forgery");
        }
        if forger.replays_answered.load(Ordering::Relaxed) > 0 {
            kinds.insert("replay");
        }
        crate::coverage::reached(&crate::coverage::Evidence {
            kinds: &kinds,
            points: &self.tally.points,
            edges: &edges,
            clouds: &clouds,
            link_resends: self.link_stats.resends.load(Ordering::Relaxed),
            disk_refusals,
            big: self.slice.households.len() >= crate::faults::BIG_HOUSEHOLDS,
            faults_at_end: self.tally.faults_at_end,
        })
    }
}

/// Sets an edge's disk from the failures on it: an I/O error wins over
/// full, none leaves it working.
fn set_disk_failure(site: &mut EdgeSite) {
    let failure = if site.disk_failures.contains(&DiskError::Io) {
        Some(DiskError::Io)
    } else {
        site.disk_failures.first().copied()
    };
    site.disk.set_failure(failure.map(DiskError::failure));
    site.disk_failing
        .store(failure.is_some(), Ordering::Relaxed);
}

/// How many acknowledged tuples of the database at `path` were
/// acknowledged under none of `epochs` nor `digest`: what the edge has left
/// to ship again after a store or a shard forgot. The refill's own rule
/// (`acked_epoch NOT IN` the current epochs), asked of the database
/// directly: the outbox's count takes one epoch only.
fn acked_not_under_any(
    path: &std::path::Path,
    epochs: &[u64; edgemeter_wire::STORE_BUCKETS],
    digest: u64,
) -> Result<u64, String> {
    let connection =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|error| error.to_string())?;
    // As the outbox's own read-only connection: a reader of a WAL database
    // waits only while the writer recovers it.
    connection
        .busy_timeout(Duration::from_secs(1))
        .map_err(|error| error.to_string())?;
    let known: Vec<String> = epochs
        .iter()
        .chain([&digest])
        .map(|epoch| (*epoch as i64).to_string())
        .collect();
    // Integers formatted by us, not input: nothing to inject.
    let query = format!(
        "SELECT COUNT(*) FROM power_averages WHERE sent = 2 \
         AND (acked_epoch IS NULL OR acked_epoch NOT IN ({}))",
        known.join(",")
    );
    connection
        .query_row(&query, [], |row| row.get::<_, i64>(0))
        .map(|count| count.max(0) as u64)
        .map_err(|error| error.to_string())
}

/// What one edge's own counters and start checks say, beside its rows.
fn check_edge_counters(edge: &EdgeSite, rows: &[StoredTuple], checked: &mut Findings) {
    let counters = edge.monitor.snapshot();
    let acked_rows = rows.iter().filter(|row| row.sent == 2).count() as u64;
    if counters.tuples_acked > acked_rows + edge.acks_undone {
        // Flag 2 is final: each row is acknowledged once over all the
        // edge's lives, except where a power loss undid a flag change
        // that was not synced yet (counted at the loss). More means a
        // row lost its flag 2 and its postal code (was replaced, say)
        // and went through again.
        checked.add(Kind::Duplicated, || {
            format!(
                "{} acknowledged {} times for {acked_rows} acknowledged tuples ({} undone by power losses)",
                edge.edge_id, counters.tuples_acked, edge.acks_undone
            )
        });
    }
    for finding in edge.corruption.lock().expect("corruption log lock").iter() {
        checked.add(Kind::Corrupt, || format!("{}: {finding}", edge.edge_id));
    }
    let conflicting = counters.conflicting_acks;
    if conflicting > 0 {
        // The edge keeps a tuple's first postal code; the cloud answering
        // another one later means the code changed on its side.
        checked.add(Kind::Changed, || {
            format!(
                "the cloud acknowledged {conflicting} stored tuples of {} with a different postal code",
                edge.edge_id
            )
        });
    }
}
