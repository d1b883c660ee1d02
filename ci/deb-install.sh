#!/usr/bin/env bash
# The deployment guide (deploy/README.md), run on this machine:
# `bash ci/deb-install.sh` after `bash ci/deb.sh` built the packages.
#
# It installs edgemeter-cloud, edits /etc/edgemeter/cloud.toml and the keys
# file, starts the cloud with `systemctl enable --now`; then, as the two
# packages conflict (one role per host), removes it, installs
# edgemeter-edge, makes the key, edits /etc/edgemeter/edge.toml and starts
# the edge the same way, while the cloud keeps running. Then it plays the
# meters (`edgemeter households` into tansu) and requires:
# - both services `active` under systemd, which only says so after their
#   READY=1 (Type=notify), and still active after 40 s, past the cloud's
#   30 s watchdog, so the watchdog pings come, and no watchdog check
#   logged a stalled loop;
# - their logs in the journal;
# - every tuple acknowledged, seen on the edge's /metrics, the cloud's
#   /metrics and `edgemeter status` run as the service user;
# - `systemctl reload` (SIGHUP) logged, and a SIGKILLed edge started again
#   by `Restart=on-failure`.
# Then it removes what it installed.
#
# CI machines run no systemd, so a real systemd is started here as PID 1 of
# a private PID and mount namespace, with a private /run and unit
# directory that holds only the packages' units, journald and stand-ins for
# the targets they name: nothing of this machine's own services is started.
# Skipped, and said so, where that cannot be done: not root, no unshare or
# /lib/systemd/systemd, or an edgemeter package already installed (an
# operator's install is never touched).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }
fail() { echo "ci/deb-install.sh: FAILED: $*" >&2; exit 1; }
skip() { echo "ci/deb-install.sh: SKIPPED: $*"; exit 0; }

[ "$(id -u)" -eq 0 ] || skip "needs root (dpkg -i and a systemd of its own)"
command -v unshare >/dev/null 2>&1 || skip "unshare is missing"
[ -x /lib/systemd/systemd ] || skip "/lib/systemd/systemd is missing"
if dpkg-query -W -f='${Status}\n' edgemeter-edge edgemeter-cloud 2>/dev/null | grep -q "installed"; then
    skip "an edgemeter package is installed on this machine; leaving it alone"
fi
# Where ci/deb.sh left the packages and the release binary.
target="${CARGO_TARGET_DIR:-$PWD/target}"
edge_deb="$(ls "$target"/debian/edgemeter-edge_*.deb 2>/dev/null | tail -n1 || true)"
cloud_deb="$(ls "$target"/debian/edgemeter-cloud_*.deb 2>/dev/null | tail -n1 || true)"
[ -f "$edge_deb" ] && [ -f "$cloud_deb" ] || fail "no packages in $target/debian: run bash ci/deb.sh first"
TANSU="${TANSU_BIN:-$HOME/.cargo/bin/tansu}"
[ -x "$TANSU" ] || fail "tansu is missing at $TANSU"
HOUSEHOLDS_BIN="$target/release/edgemeter"
[ -x "$HOUSEHOLDS_BIN" ] || fail "no release binary: run bash ci/deb.sh first"

work="$(mktemp -d)"
# The user and directories are removed at the end only if the packages made them.
had_user=no
getent passwd edgemeter >/dev/null && had_user=yes
[ -e /etc/edgemeter ] || [ -e /var/lib/edgemeter ] && fail "/etc/edgemeter or /var/lib/edgemeter exists already; leaving it alone"
systemd_pid=""
redis_pid=""
tansu_pid=""
cleanup() {
    set +e
    [ -n "$systemd_pid" ] && kill -9 "$systemd_pid" 2>/dev/null
    [ -n "$tansu_pid" ] && kill "$tansu_pid" 2>/dev/null
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null
    dpkg -P edgemeter-edge edgemeter-cloud >/dev/null 2>&1
    rm -rf /etc/edgemeter /var/lib/edgemeter
    if [ "$had_user" = no ] && getent passwd edgemeter >/dev/null; then
        deluser --quiet edgemeter >/dev/null 2>&1
        delgroup --quiet edgemeter >/dev/null 2>&1
    fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_for SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq "$((seconds * 2))"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    fail "$what (waited ${seconds}s)"
}

redis_port=$(free_port); kafka_port=$(free_port); heartbeat_port=$(free_port)
data_port=$(free_port); http_port=$(free_port); metrics_port=$(free_port)

step "the services' neighbours: redis-server (AOF everysec) and tansu, on free ports"
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work" --appendonly yes \
    --appendfsync everysec --save '' >"$work/redis.log" 2>&1 &
redis_pid=$!
mkdir -p "$work/tansu"
(cd "$work/tansu" && exec "$TANSU" broker --listener-url "tcp://127.0.0.1:$kafka_port" \
    --advertised-listener-url "tcp://127.0.0.1:$kafka_port" --storage-engine sqlite://tansu.db) \
    >"$work/tansu.log" 2>&1 &
tansu_pid=$!
wait_for 30 "redis-server answers" redis-cli -p "$redis_port" ping
wait_for 30 "tansu creates power_topic" "$TANSU" topic create power_topic \
    --broker "tcp://127.0.0.1:$kafka_port" --partitions 3

step "systemd as PID 1 of a namespace of its own"
mkdir -p "$work/units"
for unit in systemd-journald.service systemd-journald.socket systemd-journald-dev-log.socket; do
    cp "/lib/systemd/system/$unit" "$work/units/"
done
# Stand-ins for the targets the units and their default dependencies name.
for target in sysinit basic shutdown multi-user sockets network network-online; do
    printf '[Unit]\nDescription=%s (stand-in)\n' "$target" >"$work/units/$target.target"
done
printf '[Unit]\nDescription=ci/deb-install.sh\nWants=systemd-journald.socket systemd-journald-dev-log.socket\n' \
    >"$work/units/deb-install.target"
dpkg-deb -x "$edge_deb" "$work/edge-root"
dpkg-deb -x "$cloud_deb" "$work/cloud-root"
cp "$work"/edge-root/usr/lib/systemd/system/*.service "$work"/cloud-root/usr/lib/systemd/system/*.service "$work/units/"
cat >"$work/boot.sh" <<EOF
#!/bin/sh
set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /etc/systemd/system
mount -t tmpfs tmpfs /usr/lib/systemd/system
cp $work/units/* /etc/systemd/system/
exec /lib/systemd/systemd --system --unit=deb-install.target
EOF
chmod +x "$work/boot.sh"
unshare --fork --pid --mount --uts --mount-proc "$work/boot.sh" >"$work/systemd.log" 2>&1 &
unshare_pid=$!
for _ in $(seq 60); do
    systemd_pid="$(pgrep -P "$unshare_pid" -x systemd || true)"
    [ -n "$systemd_pid" ] && break
    sleep 0.5
done
[ -n "$systemd_pid" ] || fail "systemd did not start: $(cat "$work/systemd.log")"
inside() { nsenter -t "$systemd_pid" -m -p "$@"; }
wait_for 30 "systemd is running" sh -c "nsenter -t $systemd_pid -m -p systemctl is-system-running | grep -qx running"
inside systemctl --version | head -n1

as_service() { inside setpriv --reuid=edgemeter --regid=edgemeter --init-groups "$@"; }

step "the cloud host: install, keys file, cloud.toml, enable --now"
dpkg -i "$cloud_deb" >/dev/null
[ "$(stat -c '%U:%G %a' /var/lib/edgemeter)" = "edgemeter:edgemeter 750" ] || fail "/var/lib/edgemeter: $(stat -c '%U:%G %a' /var/lib/edgemeter)"
[ "$(stat -c '%U:%G %a' /etc/edgemeter/keys)" = "root:edgemeter 640" ] || fail "/etc/edgemeter/keys: $(stat -c '%U:%G %a' /etc/edgemeter/keys)"
# The edge's key, made as the guide makes it; its line goes to the cloud.
edgemeter keygen --edge-id edge-1 --out "$work/edge.key" | tail -n1 >/etc/edgemeter/keys
sed -i -e "s|^redis = .*|redis = \"redis://127.0.0.1:$redis_port\"|" \
    -e 's|^listen = .*|listen = "127.0.0.1"|' \
    -e "s|^heartbeat_port = .*|heartbeat_port = $heartbeat_port|" \
    -e "s|^data_port = .*|data_port = $data_port|" \
    -e "s|^http = .*|http = \"127.0.0.1:$http_port\"|" /etc/edgemeter/cloud.toml
edgemeter config check --config /etc/edgemeter/cloud.toml --for cloud | tail -n1
inside systemctl daemon-reload
inside systemctl enable --now edgemeter-cloud
# `systemctl start` of a Type=notify unit returns once READY=1 came.
inside systemctl is-active edgemeter-cloud
curl -sf "http://127.0.0.1:$http_port/api/edges" >/dev/null || fail "the cloud is active but its API does not answer"

step "the edge host: remove the cloud package (the service keeps running), install the edge's"
dpkg -r edgemeter-cloud >/dev/null
dpkg -i "$edge_deb" >/dev/null
install -m 0640 -o root -g edgemeter "$work/edge.key" /etc/edgemeter/edge.key
sed -i -e "s|^kafka = .*|kafka = \"127.0.0.1:$kafka_port\"|" \
    -e 's|^cloud = .*|cloud = "127.0.0.1"|' \
    -e "s|^heartbeat_port = .*|heartbeat_port = $heartbeat_port|" \
    -e "s|^data_port = .*|data_port = $data_port|" \
    -e "s|^metrics = .*|metrics = \"127.0.0.1:$metrics_port\"|" /etc/edgemeter/edge.toml
edgemeter config check --config /etc/edgemeter/edge.toml --for edge | tail -n1
inside systemctl enable --now edgemeter-edge
inside systemctl is-active edgemeter-edge

step "the meters: 2 minutes of the 50 households into tansu"
"$HOUSEHOLDS_BIN" households --kafka "127.0.0.1:$kafka_port" --speed max --duration 2m 2>&1 | tail -n1
# 2 minutes of 50 households: 24 windows each, plus the last partial one,
# closed by the edge's 60 s idle flush.
expected=1202
metric() { curl -sf "$1" | sed -n "s/^$2 \([0-9.]*\)$/\1/p"; }
acked_everywhere() {
    [ "$(metric "http://127.0.0.1:$metrics_port/metrics" 'edgemeter_outbox_tuples{state="acked"}')" = "$expected" ] &&
        [ "$(metric "http://127.0.0.1:$http_port/metrics" edgemeter_cloud_tuples_stored_total)" = "$expected" ]
}
wait_for 150 "all $expected tuples acknowledged on both /metrics" acked_everywhere
echo "edge /metrics: acked $expected; cloud /metrics: stored $expected"
status="$(as_service edgemeter status --db /var/lib/edgemeter/edge.db --json)"
python3 -c 'import json,sys; s=json.loads(sys.argv[1]); assert (s["queued"],s["sent"],s["acked"],s["rejected"])==(0,0,int(sys.argv[2]),0), s; assert s["edge"]["running"] and s["edge"]["connected"], s' "$status" "$expected"
echo "edgemeter status (as edgemeter): $expected acknowledged, edge running and connected"

step "watchdog, journal, reload, restart on failure"
sleep 40
for unit in edgemeter-cloud edgemeter-edge; do
    [ "$(inside systemctl is-active "$unit")" = active ] || fail "$unit is not active after 40 s: $(inside systemctl status "$unit" --no-pager)"
    [ "$(inside systemctl show -p NRestarts --value "$unit")" = 0 ] || fail "$unit restarted by itself"
done
inside journalctl -u edgemeter-cloud --no-pager | grep -q "cloud serving" || fail "no cloud log in the journal"
inside journalctl -u edgemeter-edge --no-pager | grep -q "cloud connected" || fail "no edge log in the journal"
# The loops turned all along: no watchdog check found them stalled.
if inside journalctl --no-pager | grep "made no progress since the last watchdog check"; then
    fail "a watchdog check found a main loop stalled"
fi
inside systemctl reload edgemeter-edge
wait_for 10 "the reload is logged" sh -c "nsenter -t $systemd_pid -m -p journalctl -u edgemeter-edge --no-pager | grep -q 'SIGHUP: key file reloaded'"
main_pid="$(inside systemctl show -p MainPID --value edgemeter-edge)"
inside kill -9 "$main_pid"
wait_for 30 "the killed edge is started again" sh -c \
    "[ \"\$(nsenter -t $systemd_pid -m -p systemctl show -p NRestarts --value edgemeter-edge)\" = 1 ] && nsenter -t $systemd_pid -m -p systemctl is-active edgemeter-edge"
inside systemctl stop edgemeter-edge edgemeter-cloud
echo "both services ran under systemd $(inside systemctl --version | head -n1 | cut -d' ' -f2): ready, watchdog, journal, reload, restart"

step "the guide's install ran: cloud and edge packages, configs, services, metrics"
