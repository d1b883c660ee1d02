//! Serves the cloud logic over NNG: [`Cloud`] answers each socket's
//! requests, the server only moves bytes.

use crate::server::RequestHandler;
use edgemeter_cloud::{Cache, Cloud};
use edgemeter_edge::Channel;
use edgemeter_env::WallClock;

impl<C: Cache, W: WallClock> RequestHandler for Cloud<C, W> {
    async fn handle(&self, channel: Channel, request: Vec<u8>) -> Vec<u8> {
        match channel {
            Channel::Heartbeat(_) => self.handle_heartbeat(&request).await,
            Channel::Data => self.handle_data(&request).await,
        }
    }
}
