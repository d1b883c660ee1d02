#!/usr/bin/env bash
# Installs what building and running EdgeMeter needs beyond Rust:
# `bash ci/setup.sh`. The README's first command runs it before the demo,
# and `ci/test.sh` runs it before the tests, so the two cannot drift.
#
# On a fresh Debian machine with Rust and git it installs, with apt and only
# when missing:
# - cmake, make, gcc, g++, perl, pkg-config: the nng crate builds libnng
#   with cmake; rdkafka builds librdkafka and rusqlite builds SQLite from
#   their C sources.
# - nodejs and npm: `npm ci --prefix web` installs Chart.js for the
#   dashboard.
# Anything already on the PATH is left alone, so a second run does nothing.
# As root it calls apt-get directly, otherwise through sudo.
set -euo pipefail

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt_install PACKAGE...: one apt-get update, then the packages.
apt_install() {
    [ "$#" -gt 0 ] || return 0
    printf '\n==> installing %s\n' "$*" >&2
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends "$@"
}

# missing_build_packages: prints the Debian packages of the build tools that
# are not on the PATH.
missing_build_packages() {
    local missing=()
    command -v cmake >/dev/null 2>&1 || missing+=(cmake)
    command -v make >/dev/null 2>&1 || missing+=(make)
    command -v cc >/dev/null 2>&1 || missing+=(gcc)
    command -v c++ >/dev/null 2>&1 || missing+=(g++)
    command -v perl >/dev/null 2>&1 || missing+=(perl)
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
    printf '%s\n' "${missing[@]}"
}

# Sourced by ci/test.sh for the functions above; run, it installs.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    mapfile -t packages < <(missing_build_packages | sed '/^$/d')
    apt_install "${packages[@]}"
fi
