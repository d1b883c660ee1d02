#!/bin/sh
# Runs the browser test against a running `edgemeter demo`: the real cloud,
# edge and households in one process, replaying ten minutes of every
# household at 60x, with the dashboard on a free loopback port. The
# screenshot goes to target/dashboard/demo.png (a CI artifact).
#
#   web/tests/run-against-demo.sh        (from anywhere in the repository)
#
# Needs `npm ci` in web/ and Debian's chromium (or CHROMIUM_PATH).
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
shots="$root/target/dashboard"
work=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT INT TERM

port=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")

cd "$root"
cargo build --quiet -p edgemeter --bin edgemeter
"$target/debug/edgemeter" demo --speed 60 --duration 10m --http "127.0.0.1:$port" \
    --db "$work/edge.db" > "$work/demo.out" 2> "$work/demo.log" &
pid=$!

# The demo says where its dashboard is in its first log line.
node -e "
  const deadline = Date.now() + 30000;
  const poll = () => fetch('http://127.0.0.1:$port/api/states')
    .then(() => process.exit(0))
    .catch(() => Date.now() > deadline ? process.exit(1) : setTimeout(poll, 200));
  poll();" || { cat "$work/demo.log"; exit 1; }
head -n 1 "$work/demo.log" | grep -q "dashboard at http://127.0.0.1:$port" || {
  echo "the demo's first log line does not name its dashboard:"; head -n 3 "$work/demo.log"; exit 1; }

node web/tests/browser.mjs "http://127.0.0.1:$port/" "$shots/demo.png"
