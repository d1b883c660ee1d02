//! `edgemeter-nng` carries EdgeMeter over NNG, the original system's
//! transport (pynng REQ/REP on ports 63270 and 63271): the edge's
//! `CloudLink` and the cloud's servers. It owns nothing of the protocol
//! itself: bytes in, bytes out; what they mean is `edgemeter-wire`'s, what
//! to do with them `edgemeter-edge`'s and `edgemeter-cloud`'s.
//!
//! - [`setup`]: ports, URLs and socket options both ends set.
//! - [`cloud_nodes`]: `--cloud ADDR[,ADDR...]`, the cloud nodes an edge dials.
//! - [`link`]: the edge's `CloudLink` over NNG REQ, many requests in flight,
//!   one heartbeat socket per node and one data socket dialing every node.
//! - [`server`]: the cloud's REP servers, many contexts per socket.
//! - [`cloud_handler`]: serves `edgemeter_cloud::Cloud` through [`server`].
//!
//! The simulation replaces [`link`] with a model (`sim-tests`'s `SimLink`);
//! `edgemeter-contract`'s link suite holds the two to the same behaviour.

pub mod cloud_handler;
pub mod cloud_nodes;
pub mod link;
pub mod server;
pub mod setup;

pub use cloud_nodes::{CloudNode, CLOUD_NODES_MAX};
pub use link::NngLink;
pub use server::{NngServer, RequestHandler};
