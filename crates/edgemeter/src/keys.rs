//! Edge keys on disk and in the environment, never on the command line
//! (where `ps` would show them).
//!
//! - The cloud reads a keys file: one `EDGE_ID HEX_KEY` per line, `#` comments.
//! - An edge reads its key from a file holding 64 hex digits, or from the
//!   environment variable `EDGEMETER_EDGE_KEY`.
//! - `edgemeter keygen` makes a key for an edge and prints the cloud's line.

use crate::command_error::CommandError;
use edgemeter_wire::EdgeKey;
use std::collections::BTreeMap;
use std::path::Path;

/// The environment variable an edge's key may come from.
pub const EDGE_KEY_ENV: &str = "EDGEMETER_EDGE_KEY";

/// The most edges one keys file may hold, as the cloud tracks them.
pub const KEYS_MAX: usize = 10_000;

fn read(path: &Path, what: &str) -> Result<String, CommandError> {
    std::fs::read_to_string(path).map_err(|error| {
        CommandError::config(format!(
            "cannot read the {what} {}: {error}; create it with `edgemeter keygen`",
            path.display()
        ))
    })
}

/// Parses the cloud's keys file.
pub fn load_keys_file(path: &Path) -> Result<BTreeMap<String, EdgeKey>, CommandError> {
    let text = read(path, "keys file")?;
    let mut keys = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| {
            CommandError::config(format!("{}:{}: {reason}", path.display(), index + 1))
        };
        let (edge_id, hex) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad("expected `EDGE_ID HEX_KEY`".into()))?;
        edgemeter_wire::check_id(edge_id).map_err(|reason| bad(reason.into()))?;
        let key = EdgeKey::from_hex(hex).map_err(bad)?;
        if keys.insert(edge_id.to_owned(), key).is_some() {
            return Err(bad(format!("edge {edge_id} is listed twice")));
        }
        if keys.len() > KEYS_MAX {
            return Err(bad(format!("more than {KEYS_MAX} edges")));
        }
    }
    Ok(keys)
}

/// The edge's key: from `--key-file`, else from `EDGEMETER_EDGE_KEY`, else none.
pub fn load_edge_key(key_file: Option<&Path>) -> Result<Option<EdgeKey>, CommandError> {
    if let Some(path) = key_file {
        let text = read(path, "key file")?;
        let key = EdgeKey::from_hex(&text)
            .map_err(|reason| CommandError::config(format!("{}: {reason}", path.display())))?;
        return Ok(Some(key));
    }
    match std::env::var(EDGE_KEY_ENV) {
        Ok(hex) => EdgeKey::from_hex(&hex)
            .map(Some)
            .map_err(|reason| CommandError::config(format!("{EDGE_KEY_ENV}: {reason}"))),
        Err(_) => Ok(None),
    }
}

/// A fresh random key from the operating system's generator.
pub fn generate_key() -> EdgeKey {
    EdgeKey::from_bytes(rand::random())
}

/// Writes a key file readable by its owner only.
pub fn write_key_file(path: &Path, key: &EdgeKey) -> Result<(), CommandError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).map_err(|error| {
        CommandError::config(format!("cannot create {}: {error}", path.display()))
    })?;
    writeln!(file, "{}", key.to_hex())
        .map_err(|error| CommandError::config(format!("cannot write {}: {error}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_file_parses_and_names_its_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let hex = "ab".repeat(32);
        std::fs::write(&path, format!("# edges\nedge-1 {hex}\n\nedge-2  {hex}\n")).unwrap();
        let keys = load_keys_file(&path).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["edge-1", "edge-2"]);
        std::fs::write(&path, format!("edge-1 {hex}\nedge-1 {hex}\n")).unwrap();
        assert!(load_keys_file(&path)
            .unwrap_err()
            .to_string()
            .contains(":2: edge edge-1 is listed twice"));
        std::fs::write(&path, "edge-1 nothex\n").unwrap();
        assert!(load_keys_file(&path)
            .unwrap_err()
            .to_string()
            .contains(":1:"));
    }

    #[test]
    fn a_keys_file_over_the_edge_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let hex = "ab".repeat(32);
        let lines = |count: usize| -> String {
            (0..count)
                .map(|index| format!("edge-{index} {hex}\n"))
                .collect()
        };
        std::fs::write(&path, lines(KEYS_MAX)).unwrap();
        assert_eq!(load_keys_file(&path).unwrap().len(), KEYS_MAX);
        std::fs::write(&path, lines(KEYS_MAX + 1)).unwrap();
        let error = load_keys_file(&path).unwrap_err().to_string();
        assert!(
            error.contains(&format!(":{}: more than {KEYS_MAX} edges", KEYS_MAX + 1)),
            "{error}"
        );
    }

    #[test]
    fn a_key_file_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.key");
        let key = generate_key();
        write_key_file(&path, &key).unwrap();
        assert_eq!(load_edge_key(Some(&path)).unwrap(), Some(key));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "others may not read a key");
        }
        assert!(
            write_key_file(&path, &generate_key()).is_err(),
            "never overwrites a key"
        );
    }
}
