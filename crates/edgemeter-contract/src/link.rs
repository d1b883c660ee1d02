//! The `CloudLink` contract: what the edge relies on from its link to the
//! cloud, for the simulated link (`SimLink` over turmoil TCP) and the real
//! one (`NngLink`, NNG REQ sockets over TCP) alike.
//!
//! The fixture serves every node with the same rules ([`Served`]): a reply
//! names the node and the channel; a request whose body starts with
//! [`SWALLOW`] goes unanswered the first time any node sees it (a reply
//! lost, or a request that reached a node and died with its pipe), and is
//! answered from then on. Each behaviour below is one promise:
//! - a pipe that breaks with a request on it: the request goes again at
//!   once, long before any resend timer, and is answered; the cloud saw it
//!   twice ([`a_resend_after_the_pipe_breaks`]);
//! - a reply that never comes: the resend timer sends the request again on
//!   the same pipe, without redialling; the cloud saw it twice, the caller
//!   got one answer ([`a_resend_after_the_resend_timer`]);
//! - a stalled connection (bytes held, not dropped): the caller hears
//!   nothing while it lasts; afterwards nothing is lost, not even a request
//!   whose caller gave up, resends queued behind the stall arrive too, and
//!   the pipe was never redialled ([`a_stalled_connection`]);
//! - heartbeats reach their own node and only it, data any node; a node
//!   that is down costs its heartbeat and no data request
//!   ([`heartbeats_on_their_own_channel`]).
//!
//! Behaviours take time bounds from the link's own contract (the resend
//! time the fixture was asked for), with room for a slow machine.

use edgemeter_edge::{Channel, CloudLink, LinkError};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

/// A body starting with this goes unanswered the first time a node sees it.
pub const SWALLOW: &[u8] = b"swallow:";

/// The resend time of the behaviours that wait for it: short, so that the
/// suite is quick, and long against loopback round trips.
pub const RESEND_SHORT: Duration = Duration::from_secs(1);

/// The resend time of the behaviours where a resend timer would spoil the
/// evidence: far longer than any of them waits (NNG's default is 60 s).
pub const RESEND_LONG: Duration = Duration::from_secs(120);

/// How long a request that must be answered may take: a few resend times
/// plus redials (100 ms to 1 s apart) on a loaded machine.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// How long a stall lasts in [`a_stalled_connection`]: several resend times.
pub const STALL: Duration = Duration::from_secs(4);

/// How long a caller waits during a stall before it gives up, as the
/// edge's own request timeout does.
pub const CALLER_GIVES_UP: Duration = Duration::from_millis(1_500);

/// The pause between two looks at the fixture's counters.
const LOOK_PAUSE: Duration = Duration::from_millis(10);

/// The reply node `node` gives to `body` on `channel`.
pub fn reply(node: usize, channel: Channel, body: &[u8]) -> Vec<u8> {
    let channel = match channel {
        Channel::Data => "data".to_owned(),
        Channel::Heartbeat(_) => "heartbeat".to_owned(),
    };
    let mut reply = format!("node-{node}/{channel}/").into_bytes();
    reply.extend_from_slice(body);
    reply
}

/// What the fixture's nodes saw, shared by all of them: a fixture's server
/// calls [`Served::take`] for every request and answers what it returns.
#[derive(Debug, Default)]
pub struct Served {
    seen: Mutex<BTreeMap<Vec<u8>, Vec<usize>>>,
}

impl Served {
    /// Records that node `node` received `body` on `channel` and returns
    /// its reply, or `None` for the first copy of a [`SWALLOW`] request.
    pub fn take(&self, node: usize, channel: Channel, body: &[u8]) -> Option<Vec<u8>> {
        let mut seen = self.seen.lock().expect("served lock");
        let copies = seen.entry(body.to_vec()).or_default();
        copies.push(node);
        let swallowed = body.starts_with(SWALLOW) && copies.len() == 1;
        (!swallowed).then(|| reply(node, channel, body))
    }

    /// The nodes that received `body`, one entry per copy, in order.
    pub fn seen(&self, body: &[u8]) -> Vec<usize> {
        let seen = self.seen.lock().expect("served lock");
        seen.get(body).cloned().unwrap_or_default()
    }
}

/// The world around one link implementation: the cloud nodes that serve
/// it (by [`Served`]'s rules) and the faults of the connections to them.
pub trait LinkFixture {
    type Link: CloudLink;

    /// The nodes the fixture serves: at least 1.
    fn nodes(&self) -> usize;

    /// What every node saw.
    fn served(&self) -> &Served;

    /// A new link dialing every node, with `resend` as its resend time.
    fn link(&mut self, resend: Duration) -> impl Future<Output = Self::Link>;

    /// The connections node `node` has accepted so far on its data port
    /// that carried requests: a redial shows here.
    fn data_connections(&self, node: usize) -> usize;

    /// Breaks every open connection to node `node` (both ports): the link
    /// sees them close. New connections are accepted as before.
    fn break_pipes(&mut self, node: usize) -> impl Future<Output = ()>;

    /// Stalls every connection between the link and node `node`: bytes
    /// both ways are held, not dropped, and the connections stay open.
    fn stall(&mut self, node: usize) -> impl Future<Output = ()>;

    /// Takes node `node` down: its connections break, new ones are refused.
    fn kill(&mut self, node: usize) -> impl Future<Output = ()>;

    /// Undoes every fault on node `node`: held bytes flow on, a killed node
    /// serves again.
    fn heal(&mut self, node: usize) -> impl Future<Output = ()>;
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One request that must be answered within [`ANSWER_WITHIN`].
async fn answered<L: CloudLink>(link: &L, channel: Channel, body: &[u8], what: &str) -> Vec<u8> {
    match tokio::time::timeout(ANSWER_WITHIN, link.request(channel, body.to_vec())).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(error)) => panic!("{what}: the request failed: {error}"),
        Err(_) => panic!("{what}: no answer within {ANSWER_WITHIN:?}"),
    }
}

/// Waits until `body` was seen `copies` times, in bounded looks.
async fn until_seen<F: LinkFixture>(fixture: &F, body: &[u8], copies: usize, what: &str) {
    let looks = (ANSWER_WITHIN.as_millis() / LOOK_PAUSE.as_millis()) as usize;
    for _ in 0..looks {
        if fixture.served().seen(body).len() >= copies {
            return;
        }
        tokio::time::sleep(LOOK_PAUSE).await;
    }
    panic!(
        "{what}: {} seen {:?} after {ANSWER_WITHIN:?}, wanted {copies} copies",
        text(body),
        fixture.served().seen(body)
    );
}

/// Every pipe of the link is up: each node answered a heartbeat and, for
/// the data socket, one data request per node (round robin puts one on
/// each pipe that is up; retried until every node has answered one).
async fn warm_up<F: LinkFixture>(fixture: &F, link: &F::Link) {
    let nodes = fixture.nodes();
    for node in 0..nodes {
        let body = format!("warm-hb-{node}").into_bytes();
        answered(link, Channel::Heartbeat(node), &body, "warm-up heartbeat").await;
    }
    let mut answering = vec![false; nodes];
    for round in 0..100 {
        if answering.iter().all(|&up| up) {
            return;
        }
        let body = format!("warm-data-{round}").into_bytes();
        let reply = answered(link, Channel::Data, &body, "warm-up data").await;
        let node = text(&reply)
            .strip_prefix("node-")
            .and_then(|rest| rest.split('/').next()?.parse::<usize>().ok())
            .expect("a reply names its node");
        answering[node] = true;
        tokio::time::sleep(LOOK_PAUSE).await;
    }
    panic!("warm-up: not every node answered data: {answering:?}");
}

fn data_connections<F: LinkFixture>(fixture: &F) -> Vec<usize> {
    (0..fixture.nodes())
        .map(|node| fixture.data_connections(node))
        .collect()
}

/// Goal: a request on a pipe that breaks goes again at once (NNG resends a
/// broken pipe's requests without waiting for the resend timer, on another
/// pipe or on the redialled one) and is answered; the cloud saw it twice.
/// Method: the first copy is swallowed, so it waits on its pipe; every
/// node's pipes are broken; the resend time is far longer than the test.
pub async fn a_resend_after_the_pipe_breaks<F: LinkFixture>(fixture: &mut F) {
    let link = fixture.link(RESEND_LONG).await;
    warm_up(fixture, &link).await;
    let body = [SWALLOW, b"broken"].concat();
    let request = link.request(Channel::Data, body.clone());
    let breaking = async {
        until_seen(fixture, &body, 1, "before the break").await;
        for node in 0..fixture.nodes() {
            fixture.break_pipes(node).await;
        }
    };
    let (reply, ()) = tokio::join!(tokio::time::timeout(ANSWER_WITHIN, request), breaking);
    let reply = reply
        .expect("answered well before the resend timer")
        .expect("answered, not failed");
    let seen = fixture.served().seen(&body);
    assert_eq!(seen.len(), 2, "the cloud saw the request twice: {seen:?}");
    let node = seen[1];
    assert_eq!(reply, self::reply(node, Channel::Data, &body));
}

/// Goal: a request whose reply never comes is sent again when its resend
/// timer fires, on the same pipe (no redial), and answered once; the cloud
/// saw it twice and nothing more after the answer. Method: the first copy
/// is swallowed; the resend time is [`RESEND_SHORT`].
pub async fn a_resend_after_the_resend_timer<F: LinkFixture>(fixture: &mut F) {
    let link = fixture.link(RESEND_SHORT).await;
    warm_up(fixture, &link).await;
    let before = data_connections(fixture);
    let body = [SWALLOW, b"lost-reply"].concat();
    let started = tokio::time::Instant::now();
    let reply = answered(&link, Channel::Data, &body, "lost reply").await;
    let took = started.elapsed();
    assert!(
        took >= RESEND_SHORT.mul_f64(0.9),
        "answered after {took:?}: before the resend timer could fire"
    );
    // Another resend time: nothing more may come once it is answered.
    tokio::time::sleep(RESEND_SHORT * 2).await;
    let seen = fixture.served().seen(&body);
    assert_eq!(seen.len(), 2, "the cloud saw the request twice: {seen:?}");
    assert_eq!(reply, self::reply(seen[1], Channel::Data, &body));
    assert_eq!(
        data_connections(fixture),
        before,
        "a resend timer is no reason to redial"
    );
}

/// Goal: while every connection is stalled (bytes held, not dropped) the
/// caller hears nothing; once the stall ends nothing is lost: a request
/// whose caller gave up during the stall still reaches the cloud, one that
/// waits is answered, the resends the timer queued behind the stall arrive
/// too, and no pipe was redialled, during the stall or after it.
pub async fn a_stalled_connection<F: LinkFixture>(fixture: &mut F) {
    let link = fixture.link(RESEND_SHORT).await;
    warm_up(fixture, &link).await;
    let before = data_connections(fixture);
    for node in 0..fixture.nodes() {
        fixture.stall(node).await;
    }
    let abandoned = b"stalled-abandoned".to_vec();
    let outcome = tokio::time::timeout(
        CALLER_GIVES_UP,
        link.request(Channel::Data, abandoned.clone()),
    )
    .await;
    assert!(
        outcome.is_err(),
        "an answer through a stalled connection: {outcome:?}"
    );
    let waiting = b"stalled-waiting".to_vec();
    let request = tokio::time::timeout(
        STALL + ANSWER_WITHIN,
        link.request(Channel::Data, waiting.clone()),
    );
    let stalling = async {
        tokio::time::sleep(STALL).await;
        assert!(
            fixture.served().seen(&waiting).is_empty(),
            "a request crossed a stalled connection"
        );
        assert_eq!(
            data_connections(fixture),
            before,
            "redialled during the stall"
        );
        for node in 0..fixture.nodes() {
            fixture.heal(node).await;
        }
    };
    let (reply, ()) = tokio::join!(request, stalling);
    let reply: Result<Vec<u8>, LinkError> = reply.expect("answered after the stall");
    let reply = reply.expect("answered, not failed");
    let seen = fixture.served().seen(&waiting);
    // Any node that saw a copy may have answered: with several nodes, the
    // resends went round robin.
    assert!(
        seen.iter()
            .any(|&node| reply == self::reply(node, Channel::Data, &waiting)),
        "the answer comes from a node that saw the request: {seen:?}"
    );
    until_seen(
        fixture,
        &abandoned,
        1,
        "the abandoned request after the stall",
    )
    .await;
    // The resend timer fired during the stall; its copies were held too.
    until_seen(fixture, &waiting, 2, "the resends held by the stall").await;
    println!(
        "stalled connection: the waiting request arrived {} times, the abandoned one {}",
        fixture.served().seen(&waiting).len(),
        fixture.served().seen(&abandoned).len()
    );
    assert_eq!(
        data_connections(fixture),
        before,
        "a stall that ended is no reason to redial"
    );
}

/// Goal: a heartbeat reaches its own node and no other; data goes to any
/// node; with a node down, its heartbeat goes unanswered while the others'
/// are answered and every data request is answered by a live node; once
/// it is back, its heartbeat is answered again.
pub async fn heartbeats_on_their_own_channel<F: LinkFixture>(fixture: &mut F) {
    let link = fixture.link(RESEND_SHORT).await;
    warm_up(fixture, &link).await;
    let nodes = fixture.nodes();
    for node in 0..nodes {
        let body = format!("own-hb-{node}").into_bytes();
        let reply = answered(&link, Channel::Heartbeat(node), &body, "heartbeat").await;
        assert_eq!(reply, self::reply(node, Channel::Heartbeat(node), &body));
    }
    if nodes < 2 {
        return;
    }
    let down = nodes - 1;
    fixture.kill(down).await;
    let body = b"hb-to-a-dead-node".to_vec();
    let outcome = tokio::time::timeout(
        CALLER_GIVES_UP,
        link.request(Channel::Heartbeat(down), body.clone()),
    )
    .await;
    assert!(
        !matches!(outcome, Ok(Ok(_))),
        "a heartbeat to a dead node was answered: {outcome:?}"
    );
    let live = answered(&link, Channel::Heartbeat(0), b"hb-live", "live heartbeat").await;
    assert_eq!(live, self::reply(0, Channel::Heartbeat(0), b"hb-live"));
    for index in 0..4 {
        let body = format!("data-while-down-{index}").into_bytes();
        let reply = answered(&link, Channel::Data, &body, "data with a node down").await;
        assert!(
            !text(&reply).starts_with(&format!("node-{down}/")),
            "a dead node answered data"
        );
    }
    fixture.heal(down).await;
    let back = b"hb-back".to_vec();
    // Redials are at most a second apart; a heartbeat sent before the
    // pipe is back may be answered only by its resend, so a few tries.
    let mut reply = None;
    for _ in 0..5 {
        if let Ok(Ok(answer)) = tokio::time::timeout(
            CALLER_GIVES_UP * 2,
            link.request(Channel::Heartbeat(down), back.clone()),
        )
        .await
        {
            reply = Some(answer);
            break;
        }
    }
    assert_eq!(
        reply.expect("the node's heartbeat is answered once it is back"),
        self::reply(down, Channel::Heartbeat(down), &back)
    );
}
