//! Where the household data is when `--data` is not given.
//!
//! The project ships `data/gem-house-1h`. A newcomer runs the binary from
//! the workspace root (`cargo run`), but tests and benches run it from a
//! crate directory, and an installed binary runs from anywhere; so the
//! default is looked up relative to the working directory first, then to
//! the workspace the executable was built in.

use std::path::{Path, PathBuf};

/// The default data set, relative to the workspace root.
pub const DATA_DIR_DEFAULT: &str = "data/gem-house-1h";

/// The directory to load: `explicit` if given (a missing one is reported by
/// the loader, naming `--data`), else the first default that exists.
pub fn resolve_data_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_owned();
    }
    candidates()
        .into_iter()
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT))
}

fn candidates() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from(DATA_DIR_DEFAULT)];
    // The workspace this binary was compiled in: crates/edgemeter/../..
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(workspace) = manifest.parent().and_then(Path::parent) {
        dirs.push(workspace.join(DATA_DIR_DEFAULT));
    }
    // The workspace around the executable: target/<profile>/edgemeter.
    if let Ok(executable) = std::env::current_exe() {
        dirs.extend(
            executable
                .ancestors()
                .skip(1)
                .take(4)
                .map(|dir| dir.join(DATA_DIR_DEFAULT)),
        );
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_directory_wins_even_if_missing() {
        let dir = Path::new("/no/such/data");
        assert_eq!(resolve_data_dir(Some(dir)), dir);
    }

    #[test]
    fn the_shipped_data_set_is_found_from_a_crate_directory() {
        // Tests run with the crate directory as the working directory,
        // where data/gem-house-1h does not exist.
        let dir = resolve_data_dir(None);
        assert!(dir.is_dir(), "{} is not a directory", dir.display());
        assert!(dir.ends_with(DATA_DIR_DEFAULT));
    }
}
