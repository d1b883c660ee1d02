//! Config files and the environment, on the real binary.
//!
//! Goal: a setting comes from the flag if given, else from its
//! `EDGEMETER_<FLAG>` variable, else from the config file, else its
//! default; a bad file is an error that names the key and the file; `config
//! check` never prints a secret. Method: each case runs the built binary in
//! a child process with its own environment (variables are per process, so
//! no test races another), and reads what it prints: `status` names the
//! database it looked for, `config check` the value and origin of each
//! setting.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Every variable these tests set, removed from the inherited environment
/// first so that the machine's own cannot decide a case.
const VARIABLES: &[&str] = &[
    "EDGEMETER_CONFIG",
    "EDGEMETER_DB",
    "EDGEMETER_IDLE_FLUSH",
    "EDGEMETER_KAFKA",
    "EDGEMETER_KEY_FILE",
    "EDGEMETER_EDGE_KEY_FILE",
    "EDGEMETER_EDGE_KEY",
    "EDGEMETER_KEYS",
    "EDGEMETER_KEYS_FILE",
    "EDGEMETER_REDIS",
    "EDGEMETER_LOG",
    "EDGEMETER_HEARTBEAT_PORT",
];

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgemeter"));
    command.args(args).stdin(Stdio::null());
    for variable in VARIABLES {
        command.env_remove(variable);
    }
    command.envs(env.iter().copied());
    command.output().expect("run edgemeter")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The database `status` looked for: it names it when it is missing.
fn status_db(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = run(args, env);
    assert!(!output.status.success(), "no database exists");
    let text = stderr(&output);
    let rest = text
        .split("no edge database at ")
        .nth(1)
        .unwrap_or_else(|| panic!("not the missing-database error: {text}"));
    rest.split(':').next().unwrap().to_owned()
}

/// The line of `key` in `config check`'s output.
fn line_of<'a>(report: &'a str, key: &str) -> &'a str {
    report
        .lines()
        .find(|line| line.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in\n{report}"))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "edge.toml",
        "[status]\ndb = \"/from/file.db\"\n",
    );
    let config = ["--config", &file, "status"];
    assert_eq!(status_db(&config, &[]), "/from/file.db");
    let env = [("EDGEMETER_DB", "/from/env.db")];
    assert_eq!(status_db(&config, &env), "/from/env.db");
    let with_flag = ["--config", &file, "status", "--db", "/from/flag.db"];
    assert_eq!(status_db(&with_flag, &env), "/from/flag.db");
    // The file may be named by EDGEMETER_CONFIG too.
    assert_eq!(
        status_db(&["status"], &[("EDGEMETER_CONFIG", &file)]),
        "/from/file.db"
    );
}

#[test]
fn config_check_shows_each_value_and_where_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "edge.toml",
        "log = \"debug\"\n[edge]\nkafka = \"file:9092\"\ncloud = \"cloud.example\"\n\
         db = \"/var/lib/edgemeter/edge.db\"\nidle_flush = \"90s\"\n",
    );
    let output = run(
        &["config", "check", "--config", &file],
        &[
            ("EDGEMETER_IDLE_FLUSH", "2m"),
            ("EDGEMETER_HEARTBEAT_PORT", "1234"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let report = stdout(&output);
    assert_eq!(
        line_of(&report, "log"),
        format!("log = \"debug\"  # {file}")
    );
    assert_eq!(
        line_of(&report, "kafka"),
        format!("kafka = \"file:9092\"  # {file}")
    );
    assert_eq!(
        line_of(&report, "idle_flush"),
        "idle_flush = \"2m\"  # EDGEMETER_IDLE_FLUSH"
    );
    assert_eq!(
        line_of(&report, "heartbeat_port"),
        "heartbeat_port = 1234  # EDGEMETER_HEARTBEAT_PORT"
    );
    assert_eq!(
        line_of(&report, "data_port"),
        "data_port = 63271  # default"
    );
    assert!(report.contains(&format!("# {file}: valid")), "{report}");
    // A required flag the file lacks may come from the environment.
    let file = write(
        dir.path(),
        "cloud.toml",
        "[cloud]\nallow_unauthenticated = true\n",
    );
    let lacking = run(&["config", "check", "--config", &file], &[]);
    assert!(!lacking.status.success());
    assert!(
        stderr(&lacking).contains("cloud needs --redis"),
        "{}",
        stderr(&lacking)
    );
    let given = run(
        &["config", "check", "--config", &file],
        &[("EDGEMETER_REDIS", "redis://127.0.0.1:1")],
    );
    assert!(given.status.success(), "{}", stderr(&given));
}

#[test]
fn the_older_variable_names_still_work_and_the_new_ones_win() {
    let dir = tempfile::tempdir().unwrap();
    let line = format!("edge-1 {}\n", "e5".repeat(32));
    let (old, new) = (
        write(dir.path(), "old.keys", &line),
        write(dir.path(), "new.keys", &line),
    );
    let file = write(
        dir.path(),
        "cloud.toml",
        "log = \"warn\"\n[cloud]\nredis = \"redis://127.0.0.1:1\"\nkeys = \"/from/file\"\n",
    );
    let check = |env: &[(&str, &str)]| {
        let output = run(&["config", "check", "--config", &file], env);
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };
    let report = check(&[("EDGEMETER_KEYS_FILE", &old), ("EDGEMETER_LOG", "debug")]);
    assert!(
        line_of(&report, "keys").starts_with(&format!("keys = \"{old}\"  # EDGEMETER_KEYS_FILE")),
        "{report}"
    );
    assert_eq!(line_of(&report, "log"), "log = \"debug\"  # EDGEMETER_LOG");
    let report = check(&[("EDGEMETER_KEYS_FILE", &old), ("EDGEMETER_KEYS", &new)]);
    assert!(
        line_of(&report, "keys").starts_with(&format!("keys = \"{new}\"  # EDGEMETER_KEYS;")),
        "{report}"
    );
    // An alias of one subcommand's flag is not another's: the edge has no
    // `keys`, and EDGEMETER_KEYS_FILE does not make one.
    let edge = run(
        &["config", "check", "--config", &file, "--for", "edge"],
        &[("EDGEMETER_KEYS_FILE", &old)],
    );
    assert!(!stderr(&edge).contains("unknown key"), "{}", stderr(&edge));
}

#[test]
fn unknown_keys_and_wrong_types_fail_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        (
            "[edge]\nidle_flsh = \"60s\"\n",
            "[edge]: unknown key `idle_flsh`",
        ),
        (
            "[edge]\nidle_flush = \"soon\"\n",
            "[edge]: idle_flush = \"soon\"",
        ),
        (
            "[cloud]\nheartbeat_port = 70000\n",
            "[cloud]: heartbeat_port",
        ),
        (
            "[cloud]\nallow_unauthenticated = \"yes\"\n",
            "[cloud]: allow_unauthenticated: expected true or false",
        ),
        ("[edge]\nkafka = 9092\n", "[edge]: kafka: expected a string"),
        ("[edgee]\nkafka = \"k:1\"\n", "unknown key `edgee`"),
    ] {
        let file = write(dir.path(), "bad.toml", text);
        // Both when checked and when a subcommand runs: a table for another
        // subcommand is checked too.
        for args in [
            vec!["config", "check", "--config", &file],
            vec!["--config", &file, "status", "--db", "x.db"],
        ] {
            let output = run(&args, &[]);
            assert!(!output.status.success(), "{text} passed");
            let error = stderr(&output);
            assert!(
                error.contains(&format!("{file}: ")) && error.contains(expected),
                "{text}: {error}"
            );
        }
    }
    let output = run(
        &["--config", "/no/such/file.toml", "status", "--db", "x"],
        &[],
    );
    assert!(stderr(&output).contains("cannot read the config file /no/such/file.toml"));
}

#[test]
fn config_check_masks_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (key_a, key_b, env_key) = ("a1".repeat(32), "b2".repeat(32), "c3".repeat(32));
    let keys = write(
        dir.path(),
        "keys",
        &format!("# edges\nedge-a {key_a}\nedge-b {key_b}\n"),
    );
    let key_file = write(dir.path(), "edge.key", &key_a);
    let file = write(
        dir.path(),
        "host.toml",
        &format!(
            "[cloud]\nredis = \"redis://admin:hunter2@127.0.0.1:6379\"\nkeys = \"{keys}\"\n\
             [edge]\nkafka = \"k:1\"\ncloud = \"c\"\ndb = \"e.db\"\n"
        ),
    );
    let output = run(
        &["config", "check", "--config", &file],
        &[
            ("EDGEMETER_EDGE_KEY", &env_key),
            ("EDGEMETER_EDGE_KEY_FILE", &key_file),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let report = stdout(&output);
    for secret in [key_a.as_str(), &key_b, &env_key, "hunter2"] {
        assert!(!report.contains(secret), "{secret} shown:\n{report}");
    }
    assert!(line_of(&report, "redis").contains("redis://admin:***@127.0.0.1:6379"));
    assert!(line_of(&report, "keys").contains("holds the keys of 2 edges"));
    let key_line = line_of(&report, "key_file");
    assert!(
        key_line.contains(&key_file) && key_line.contains("EDGEMETER_EDGE_KEY_FILE"),
        "{key_line}"
    );
    // Without a key file the environment's key is the edge's: shown masked.
    let output = run(
        &["config", "check", "--config", &file, "--for", "edge"],
        &[("EDGEMETER_EDGE_KEY", &env_key)],
    );
    let report = stdout(&output);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(report.contains("EDGEMETER_EDGE_KEY = \"***\""), "{report}");
    assert!(!report.contains(&env_key), "{report}");
    assert!(!report.contains("[cloud]"), "--for shows one table");
    // A bad keys file fails the check, and its error shows no key either.
    write(
        dir.path(),
        "keys",
        &format!("edge-a {key_a}\nedge-a {key_b}\n"),
    );
    let output = run(&["config", "check", "--config", &file], &[]);
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(error.contains("edge edge-a is listed twice"), "{error}");
    assert!(
        !error.contains(&key_a) && !error.contains(&key_b),
        "{error}"
    );
}

#[test]
fn the_shipped_sample_files_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    // The samples name /etc/edgemeter's files, which this machine lacks:
    // the environment points them at real ones, as an operator could.
    let key_file = write(dir.path(), "edge.key", &"d4".repeat(32));
    let keys = write(dir.path(), "keys", &format!("edge-1 {}\n", "d4".repeat(32)));
    for (sample, table) in [("edge.toml", "edge"), ("cloud.toml", "cloud")] {
        let file = deploy.join(sample);
        let output = run(
            &["config", "check", "--config", file.to_str().unwrap()],
            &[("EDGEMETER_KEY_FILE", &key_file), ("EDGEMETER_KEYS", &keys)],
        );
        assert!(output.status.success(), "{sample}: {}", stderr(&output));
        let report = stdout(&output);
        assert!(report.contains(&format!("[{table}]")), "{report}");
    }
    // The paths the packages lay out.
    let edge = std::fs::read_to_string(deploy.join("edge.toml")).unwrap();
    assert!(edge.contains("db = \"/var/lib/edgemeter/edge.db\""));
    assert!(edge.contains("key_file = \"/etc/edgemeter/edge.key\""));
    let cloud = std::fs::read_to_string(deploy.join("cloud.toml")).unwrap();
    assert!(cloud.contains("keys = \"/etc/edgemeter/keys\""));
}

#[test]
fn help_documents_the_config_file_and_the_environment() {
    let output = run(&["edge", "--help"], &[]);
    let help = stdout(&output);
    for expected in [
        "--idle-flush",
        "[default: 60s]",
        "[edge] table of the --config file",
        "EDGEMETER_<FLAG>",
        "EDGEMETER_EDGE_KEY",
        "--config <FILE>",
    ] {
        assert!(help.contains(expected), "{expected} missing:\n{help}");
    }
    let output = run(&["config", "check", "--help"], &[]);
    assert!(stdout(&output).contains("--for <SUBCOMMAND>"));
}
