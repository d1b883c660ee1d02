#!/usr/bin/env bash
# Makes the Python venv the mosaik tests run in, from PyPI, once:
# `bash ci/mosaik/venv.sh [DIR]` (default: target/mosaik-venv). Prints the
# venv's python on its last line. A venv whose packages match
# requirements.txt is reused as it is. Safe to run many at once (tests run
# in parallel): one holds a lock beside the venv while it builds, the
# others wait for it and then reuse what it made.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
VENV=${1:-${EDGEMETER_MOSAIK_VENV:-$PWD/target/mosaik-venv}}
REQUIREMENTS=$PWD/ci/mosaik/requirements.txt
STAMP=$VENV/.requirements
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$REQUIREMENTS" "$STAMP"; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        # Debian splits venv support out of python3.
        source ci/setup.sh
        apt_install python3-venv
    fi
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS" >&2
    cp "$REQUIREMENTS" "$STAMP"
fi
echo "$VENV/bin/python"
