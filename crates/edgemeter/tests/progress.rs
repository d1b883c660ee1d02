//! The replay's progress in a log: when stderr is not a terminal,
//! `edgemeter households` writes a progress line every few seconds
//! (`edgemeter::progress::PROGRESS_LINE_INTERVAL`) instead of a bar.

mod common;

use common::{data_dir, edgemeter_process, Tansu};
use std::time::Duration;

/// The replay below spans 2 minutes of readings at 12x: about 10 s, two
/// progress intervals. A slower machine only makes it longer.
const REPLAY_DURATION: &str = "2m";
const REPLAY_SPEED: &str = "12";

/// The backstop for the replay to end.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(120);

/// One parsed `readings published: D/T (P%), R/s, ETA E[, done]` line.
#[derive(Debug)]
struct ProgressLine {
    done: u64,
    total: u64,
    last: bool,
}

fn parse_progress(line: &str) -> Option<ProgressLine> {
    let rest = line.split_once("readings published: ")?.1;
    let (done, rest) = rest.split_once('/')?;
    let total = rest.split_once(' ')?.0;
    Some(ProgressLine {
        done: done.parse().ok()?,
        total: total.parse().ok()?,
        last: line.trim_end().ends_with(", done"),
    })
}

/// Goal: a replay logs its progress while it runs, not only at its end.
/// Method: a real tansu broker and the real binary with its stderr in a
/// file (not a terminal); the log must hold at least one progress line
/// from the middle of the run (some but not all readings published, rate
/// and ETA given), then a last one with every reading, which matches the
/// count the replay reports when it finishes.
#[test]
fn households_logs_progress_lines_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start(dir.path());
    let data = data_dir();
    let kafka = broker.address();
    let mut households = edgemeter_process(
        "households",
        &[
            "households",
            "--kafka",
            &kafka,
            "--data",
            data.to_str().unwrap(),
            "--duration",
            REPLAY_DURATION,
            "--speed",
            REPLAY_SPEED,
        ],
        dir.path(),
    );
    let status = households.wait_exit(REPLAY_TIMEOUT);
    let log = std::fs::read_to_string(&households.log).unwrap();
    assert!(status.success(), "households failed:\n{log}");

    let lines: Vec<(&str, ProgressLine)> = log
        .lines()
        .filter_map(|line| parse_progress(line).map(|parsed| (line, parsed)))
        .collect();
    let (middle, last): (Vec<_>, Vec<_>) = lines.iter().partition(|(_, line)| !line.last);
    assert!(
        !middle.is_empty(),
        "no progress line while the replay ran:\n{log}"
    );
    // A line may fall at the very end, between the last publish and the
    // broker's confirmations; one at least must be from the middle.
    assert!(
        middle
            .iter()
            .any(|(_, line)| line.done > 0 && line.done < line.total),
        "no progress line shows a partial count:\n{log}"
    );
    for (text, line) in &middle {
        assert!(line.done <= line.total, "more done than total: {text}");
        assert!(text.contains("/s, ETA "), "no rate or ETA in: {text}");
    }
    assert_eq!(last.len(), 1, "expected one last progress line:\n{log}");
    let (last_text, last) = last[0];
    assert_eq!(
        last.done, last.total,
        "the last line is not complete: {last_text}"
    );
    let finished = log
        .lines()
        .find(|line| line.contains("replay finished"))
        .unwrap_or_else(|| panic!("no `replay finished` line:\n{log}"));
    assert!(
        finished.contains(&format!("published={}", last.total)),
        "the progress total disagrees with the replay's count: {last_text} vs {finished}"
    );
}
