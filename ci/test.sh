#!/usr/bin/env bash
# The project's one test command: `bash ci/test.sh`.
#
# On a fresh Debian machine, as root, it installs what the tests need, then
# checks formatting and lints and runs every test of the workspace. CI runs
# it from `.ci/run` in a fresh clone, with CI=true and no stdin, within
# 90 minutes; it must need nothing that was installed by hand.
#
# What the tests need beyond Rust:
# - what `ci/setup.sh` installs for the build (cmake, C compilers, npm);
# - redis-server: the cache tests and the end-to-end tests start their own,
#   on free loopback ports.
# - tansu: a real Kafka-protocol broker for the end-to-end tests, built from
#   crates.io once (about 10 minutes on 2 cores) and cached in ~/.cargo/bin.
# - npm packages for web/, when the dashboard's web app exists.
# - cargo-deb: builds the Debian packages (ci/deb.sh), from crates.io once
#   (a few minutes on 2 cores) and cached in ~/.cargo/bin.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

# The build tools (cmake, compilers, npm) come from the same script the
# README's first command runs.
source ci/setup.sh

install_system_packages() {
    local missing=()
    mapfile -t missing < <(missing_build_packages | sed '/^$/d')
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    # The dashboard's browser test drives Debian's Chromium (browser
    # downloads do not work here).
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    apt_install "${missing[@]}"
}

install_tansu() {
    export TANSU_BIN="${TANSU_BIN:-$HOME/.cargo/bin/tansu}"
    if [ ! -x "$TANSU_BIN" ]; then
        step "building the tansu broker (once; cached in ~/.cargo/bin)"
        cargo install tansu --features dynostore,libsql --locked
    fi
    "$TANSU_BIN" --version
}

install_cargo_deb() {
    if ! command -v cargo-deb >/dev/null 2>&1; then
        step "installing cargo-deb (once; cached in ~/.cargo/bin)"
        cargo install cargo-deb --locked
    fi
    cargo deb --version
}

install_web_packages() {
    if [ -f web/package.json ]; then
        step "installing web/ packages"
        (cd web && npm ci --no-audit --no-fund)
    fi
}

install_system_packages
install_tansu
install_cargo_deb
install_web_packages

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

# The dev profile, not release: on 2 cores compiling dominates this run
# (librdkafka, libnng and SQLite from C sources, plus the workspace), and a
# dev build compiles several times faster than an optimised one, while the
# tests wait on sockets and processes, not on the CPU.
step "cargo test"
cargo test --workspace

# The simulation, optimised but with assertions on (`--profile sim`): the
# determinism test first, then every planted bug caught, clean seeds,
# shrinking and snapshots; then 300 seeds of the default shape.
step "simulation tests (--profile sim)"
cargo test -p sim-tests --profile sim --test determinism
cargo test -p sim-tests --profile sim

# --require-coverage: the run fails, naming them, if any fault kind, crash
# point or rare path of the coverage line was reached by none of the seeds.
step "simulation: 300 seeds, coverage required"
cargo run --profile sim -p sim-tests --bin edgemeter-sim -- run --seeds 0..300 --require-coverage

# The dashboard in a real browser, against the made-up example data (with
# data, empty, cache down) and against a running `edgemeter demo`.
# Screenshots land in target/dashboard/.
step "dashboard browser tests"
sh web/tests/run-against-example.sh
sh web/tests/run-against-demo.sh

# The real binaries against real tansu and Redis, with SIGKILLs, link cuts
# and stalls, producer and broker stalls, Redis restarts and FLUSHALL,
# checked by the simulation's checker with no loss excused. A short run
# here; the README gives a long one.
step "chaos on real processes (short)"
bash ci/chaos.sh --cycles 3 --seed 1

# The Debian packages from the release binary the README's demo command
# built (ci/deb.sh rebuilds nothing then): their contents, and their
# systemd units through systemd-analyze verify and security.
step "Debian packages and systemd units"
bash ci/deb.sh

# The deployment guide, run: both packages installed, configured and
# started under a real systemd (PID 1 of a namespace of its own), the
# meters played, every tuple acknowledged on both /metrics; then removed.
step "the deployment guide on this machine (packages, services, metrics)"
bash ci/deb-install.sh

step "all checks passed"
