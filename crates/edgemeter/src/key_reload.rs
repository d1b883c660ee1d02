//! SIGHUP reloads keys without a restart: the cloud reads its keys file
//! (`--keys`) again, the edge its key file (`--key-file`).
//!
//! The file is read and checked here, in the binary; a good one is handed
//! to the logic crates through their IO-free seams
//! ([`edgemeter_cloud::Cloud::replace_keys`], the edge's
//! `EdgeConfig::key_updates` channel). A bad file (unreadable, a bad line,
//! a duplicate edge) is refused whole with a logged error, and the keys in
//! force stay: a half-written file must never lock every edge out.
//!
//! Each command installs its SIGHUP handler ([`Hangups::install`]) first
//! thing, since SIGHUP's default action ends the process.

use crate::command_error::CommandError;
use crate::keys;
use crate::shutdown::Shutdown;
use edgemeter_cloud::{Cache, Cloud, EdgeKeys};
use edgemeter_env::WallClock;
use edgemeter_wire::EdgeKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// SIGHUPs received from [`Hangups::install`] on. Installed at the very
/// start of a command, so that a reload asked for while it connects to its
/// servers waits instead of ending the process.
pub struct Hangups {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Hangups {
    #[cfg(unix)]
    pub fn install() -> Result<Hangups, CommandError> {
        use tokio::signal::unix::{signal, SignalKind};
        let signal = signal(SignalKind::hangup())
            .map_err(|error| CommandError::config(format!("cannot watch SIGHUP: {error}")))?;
        Ok(Hangups { signal })
    }

    /// Calls `reload` on every SIGHUP until the shutdown fires.
    #[cfg(unix)]
    pub fn on_each(
        mut self,
        shutdown: Shutdown,
        mut reload: impl FnMut() + Send + 'static,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let stopping = shutdown.wait();
            tokio::pin!(stopping);
            loop {
                tokio::select! {
                    _ = &mut stopping => return,
                    received = self.signal.recv() => {
                        if received.is_none() {
                            return;
                        }
                        reload();
                    }
                }
            }
        })
    }
}

/// The cloud's reload: `keys` is its `--keys` file, if it has one.
pub fn for_cloud<C: Cache, W: WallClock>(
    hangups: Hangups,
    cloud: Arc<Cloud<C, W>>,
    keys: Option<PathBuf>,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    hangups.on_each(shutdown, move || match &keys {
        Some(path) => reload_cloud_keys(&cloud, path),
        None => tracing::warn!("SIGHUP: this cloud has no --keys file to reload; nothing changed"),
    })
}

/// Reads the keys file; hands a good one to the cloud, refuses a bad one.
pub fn reload_cloud_keys<C: Cache, W: WallClock>(cloud: &Cloud<C, W>, path: &Path) {
    let keys = match keys::load_keys_file(path) {
        Ok(keys) => keys,
        Err(error) => {
            tracing::error!(
                file = %path.display(),
                %error,
                "SIGHUP: keys file refused; the keys in force stay"
            );
            return;
        }
    };
    let change = KeysChange::between(&cloud.keys(), &keys);
    let edges = keys.len();
    cloud.replace_keys(keys);
    tracing::info!(
        file = %path.display(),
        edges,
        added = change.added,
        removed = change.removed,
        changed = change.changed,
        "SIGHUP: keys reloaded"
    );
}

/// How two key maps differ, counted by edge (never the keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysChange {
    pub added: usize,
    pub removed: usize,
    pub changed: usize,
}

impl KeysChange {
    pub fn between(before: &EdgeKeys, after: &EdgeKeys) -> KeysChange {
        let added = after
            .keys()
            .filter(|edge| !before.contains_key(*edge))
            .count();
        let removed = before
            .keys()
            .filter(|edge| !after.contains_key(*edge))
            .count();
        let changed = after
            .iter()
            .filter(|(edge, key)| before.get(*edge).is_some_and(|old| old != *key))
            .count();
        KeysChange {
            added,
            removed,
            changed,
        }
    }
}

/// The edge's reload: `key_file` is its `--key-file`, if it has one;
/// `updates` reaches the running edge.
pub fn for_edge(
    hangups: Hangups,
    key_file: Option<PathBuf>,
    updates: watch::Sender<Option<EdgeKey>>,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    hangups.on_each(shutdown, move || match &key_file {
        Some(path) => reload_edge_key(path, &updates),
        None => tracing::warn!(
            "SIGHUP: this edge has no --key-file to reload (a key from {} cannot change \
             while the edge runs); nothing changed",
            keys::EDGE_KEY_ENV
        ),
    })
}

/// Reads the key file; sends a good key to the edge, refuses a bad one.
pub fn reload_edge_key(path: &Path, updates: &watch::Sender<Option<EdgeKey>>) {
    let key = match keys::load_edge_key(Some(path)) {
        Ok(key) => key,
        Err(error) => {
            tracing::error!(
                file = %path.display(),
                %error,
                "SIGHUP: key file refused; the key in force stays"
            );
            return;
        }
    };
    if *updates.borrow() == key {
        tracing::info!(file = %path.display(), "SIGHUP: key file reloaded; the edge key is unchanged");
        return;
    }
    updates.send_replace(key);
    tracing::info!(file = %path.display(), "SIGHUP: key file reloaded; the edge key changed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_of_keys_is_counted_by_edge() {
        let key = |byte: u8| EdgeKey::from_bytes([byte; 32]);
        let before: EdgeKeys = [("a".into(), key(1)), ("b".into(), key(2))].into();
        let after: EdgeKeys = [("a".into(), key(9)), ("c".into(), key(3))].into();
        assert_eq!(
            KeysChange::between(&before, &after),
            KeysChange {
                added: 1,
                removed: 1,
                changed: 1
            }
        );
        assert_eq!(
            KeysChange::between(&after, &after),
            KeysChange {
                added: 0,
                removed: 0,
                changed: 0
            }
        );
    }

    #[test]
    fn a_bad_key_file_leaves_the_key_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.key");
        let (old, new) = (EdgeKey::from_bytes([1; 32]), EdgeKey::from_bytes([2; 32]));
        let (updates, receiver) = watch::channel(Some(old.clone()));
        std::fs::write(&path, "not a key").unwrap();
        reload_edge_key(&path, &updates);
        assert_eq!(*receiver.borrow(), Some(old));
        assert!(!receiver.has_changed().unwrap());
        std::fs::write(&path, new.to_hex()).unwrap();
        reload_edge_key(&path, &updates);
        assert!(receiver.has_changed().unwrap());
        assert_eq!(*receiver.borrow(), Some(new));
    }
}
