//! `Shutdown`: one trigger, many waiters. `main` fires it on ctrl-c or
//! SIGTERM; `demo` fires it when the run is done; tests fire their own.
//!
//! A watch channel is enough: there is one event, every waiter must see it
//! however late it starts waiting, and a dropped trigger counts as fired so
//! that nothing waits forever on a trigger nobody holds.

use tokio::sync::watch;

/// Fires the shutdown.
#[derive(Debug)]
pub struct ShutdownTrigger {
    sender: watch::Sender<bool>,
}

/// Waits for the shutdown. Clone one per task.
#[derive(Debug, Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownTrigger { sender }, Shutdown { receiver })
}

impl ShutdownTrigger {
    pub fn fire(&self) {
        self.sender.send_replace(true);
    }

    /// Fires on the first ctrl-c or SIGTERM, from a task of its own.
    pub fn fire_on_signals(self) {
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received; shutting down");
            self.fire();
        });
    }
}

impl Shutdown {
    pub fn is_fired(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Returns once the shutdown fired (or its trigger was dropped).
    pub async fn wait(mut self) {
        let _ = self.receiver.wait_for(|fired| *fired).await;
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; only ctrl-c stops this process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_waiter_sees_the_shutdown_even_a_late_one() {
        let (trigger, shutdown) = channel();
        let early = tokio::spawn(shutdown.clone().wait());
        assert!(!shutdown.is_fired());
        trigger.fire();
        early.await.unwrap();
        shutdown.clone().wait().await;
        assert!(shutdown.is_fired());
    }

    #[tokio::test]
    async fn a_dropped_trigger_releases_waiters() {
        let (trigger, shutdown) = channel();
        drop(trigger);
        shutdown.wait().await;
    }
}
