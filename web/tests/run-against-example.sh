#!/bin/sh
# Runs the browser test against the dashboard crate's `serve` example (the
# cloud's in-memory cache with made-up readings), three times: with data,
# empty (the "no data yet" state), and with the cache down (the page reports
# the API's 503 and its reason). Each server gets a free loopback
# port and is stopped at the end. Screenshots go to target/dashboard/.
#
#   web/tests/run-against-example.sh        (from anywhere in the repository)
#
# Needs `npm ci` in web/ and Debian's chromium (or CHROMIUM_PATH).
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
shots="$root/target/dashboard"
pids=""
trap 'for pid in $pids; do kill "$pid" 2>/dev/null || true; done' EXIT INT TERM

free_port() {
  node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"
}

# Waits up to 10 s for the dashboard to answer on $1.
wait_for() {
  node -e "
    const deadline = Date.now() + 10000;
    const poll = () => fetch('http://127.0.0.1:$1/api/states')
      .then(() => process.exit(0))
      .catch(() => Date.now() > deadline ? process.exit(1) : setTimeout(poll, 100));
    poll();"
}

cd "$root"
cargo build --quiet -p edgemeter-dashboard --example serve

port=$(free_port)
"$target/debug/examples/serve" --addr "127.0.0.1:$port" &
pids="$pids $!"
empty_port=$(free_port)
"$target/debug/examples/serve" --addr "127.0.0.1:$empty_port" --empty &
pids="$pids $!"
down_port=$(free_port)
"$target/debug/examples/serve" --addr "127.0.0.1:$down_port" --down &
pids="$pids $!"
wait_for "$port"
wait_for "$empty_port"
wait_for "$down_port"

node web/tests/browser.mjs "http://127.0.0.1:$port/" "$shots/dashboard.png"
node web/tests/browser.mjs "http://127.0.0.1:$empty_port/" "$shots/dashboard-empty.png" --expect-empty
node web/tests/browser.mjs "http://127.0.0.1:$down_port/" "$shots/dashboard-down.png" --expect-down
