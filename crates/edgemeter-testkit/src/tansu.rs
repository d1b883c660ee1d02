//! How to run tansu, the Kafka-protocol broker the tests and benches
//! start: where its binary is, and the arguments of a broker on one
//! loopback URL. The process itself is the caller's (the tests log it to
//! a file and read it in their assertions).

use std::path::{Path, PathBuf};

/// The tansu binary: `TANSU_BIN`, else `~/.cargo/bin/tansu`, else the
/// first on `PATH`.
pub fn tansu_binary() -> PathBuf {
    if let Ok(path) = std::env::var("TANSU_BIN") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo_bin = Path::new(&home).join(".cargo/bin/tansu");
    if cargo_bin.exists() {
        return cargo_bin;
    }
    let on_path = std::env::var_os("PATH").map(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|path| path.exists())
    });
    on_path.flatten().unwrap_or_else(|| {
        panic!(
            "tansu not found: set TANSU_BIN or run `cargo install tansu --features dynostore,libsql --locked` \
             (bash ci/test.sh does)"
        )
    })
}

/// The arguments of `tansu broker` listening on `url` (`tcp://HOST:PORT`).
///
/// SQLite storage, not `memory://`: tansu 0.6's memory engine answers a
/// fetch only with batches that start at or after the fetch offset, so a
/// consumer resuming at a committed offset inside a producer batch never
/// gets the rest of that batch (tansu-storage `dynostore.rs`, `fetch`). The
/// SQL engines fetch record by record and resume exactly.
pub fn tansu_broker_args(url: &str) -> Vec<String> {
    // Relative to the broker's working directory: tansu 0.6 prefixes even
    // an absolute path with it.
    let storage = "sqlite://tansu.db".to_owned();
    [
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        &storage,
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect()
}

/// The arguments of `tansu topic create` for `topic` with `partitions`,
/// on the broker at `url`.
pub fn tansu_topic_args(url: &str, topic: &str, partitions: u32) -> Vec<String> {
    [
        "topic",
        "create",
        topic,
        "--broker",
        url,
        "--partitions",
        &partitions.to_string(),
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect()
}
