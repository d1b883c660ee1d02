#!/usr/bin/env bash
# Chaos on real processes: `bash ci/chaos.sh [--cycles N] [--seed S]
# [--duration D] [--speed X] [--timeout SECONDS]`.
#
# Starts on free loopback ports: tansu (durable SQLite storage) with
# power_topic in 3 partitions, redis-server (no persistence), `edgemeter
# cloud`, two `edgemeter-chaos proxy` processes between edge and cloud (the
# heartbeat port and the data port), `edgemeter edge` pointed at the
# proxies, and `edgemeter households` replaying the first D of the shipped
# data set. Then, for N cycles drawn from the seed (bash's RANDOM seeded
# with S): SIGKILL the edge and restart it; SIGKILL the cloud and restart
# it; cut, stall or reset the link for a random time; or restart Redis
# (empty). Then it heals everything, waits until the edge has acknowledged
# every window of the input with nothing queued or in flight, and runs
# `edgemeter-chaos check`, the simulation's checker over the input, the
# edge's database and Redis. Its last line is the checker's JSON:
#   {"cycles": N, "tuples": T, "lost": 0, "unexpected": 0, "duplicated": 0, "changed": 0}
# and it exits 0 only when all four counts are 0. Every process it started
# is killed on exit; logs stay in the printed work directory on failure
# (or always, with CHAOS_KEEP_WORK=1).
#
# Short (CI):  bash ci/chaos.sh --cycles 3 --seed 1
# Long:        bash ci/chaos.sh --cycles 40 --seed 7 --duration 10m --timeout 600
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

CYCLES=3
SEED=""
DURATION=2m
SPEED=""
# Seconds to wait for convergence after the heal.
CONVERGE_TIMEOUT_S=180
# Seconds a server may take to accept connections after it was started.
START_TIMEOUT_S=60
# A Redis restart leaves the cache down this long (ms): long enough that a
# tuple written to the old server but acknowledged at the edge only after
# the restart is implausible, which the loss time below relies on.
REDIS_GAP_MS=1000
EDGE_ID=chaos-edge

while [ $# -gt 0 ]; do
    case "$1" in
        --cycles) CYCLES=$2; shift 2 ;;
        --seed) SEED=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --speed) SPEED=$2; shift 2 ;;
        --timeout) CONVERGE_TIMEOUT_S=$2; shift 2 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "chaos.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$SEED" ]; then SEED=$(( $(date +%s) % 100000 )); fi
RANDOM=$SEED

log() { printf '[chaos %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
now_ms() { date +%s%3N; }

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# Built one package at a time: sim-tests (which the checker links) turns on
# the planted-bug features, and feature unification must not reach the
# edgemeter binary under test.
log "building edgemeter and edgemeter-chaos"
cargo build --quiet -p edgemeter >&2
cargo build --quiet -p edgemeter-chaos >&2
EDGEMETER=$TARGET_DIR/debug/edgemeter
CHAOS=$TARGET_DIR/debug/edgemeter-chaos
TANSU=${TANSU_BIN:-$HOME/.cargo/bin/tansu}
DATA=$ROOT/data/gem-house-1h
[ -x "$TANSU" ] || { echo "chaos.sh: tansu not found at $TANSU (bash ci/test.sh installs it)" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/edgemeter-chaos.XXXXXX")
DB=$WORK/edge.db
declare -A PIDS=()
KEEP_WORK=1
CHECKED=0

cleanup() {
    local name
    for name in "${!PIDS[@]}"; do
        kill -KILL "${PIDS[$name]}" 2>/dev/null || true
    done
    for name in "${!PIDS[@]}"; do
        wait "${PIDS[$name]}" 2>/dev/null || true
    done
    if [ "$KEEP_WORK" = 0 ]; then rm -rf "$WORK"
    elif [ "$CHECKED" = 0 ]; then log "logs kept in $WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME COMMAND...: runs it in the background, output appended to
# $WORK/NAME.log, working directory $WORK (tansu resolves its SQLite path
# relative to it).
start() {
    local name=$1; shift
    ( cd "$WORK" && exec "$@" ) >>"$WORK/$name.log" 2>&1 &
    PIDS[$name]=$!
}

# stop NAME: SIGKILL, as a crash would, and reap.
stop() {
    local name=$1
    kill -KILL "${PIDS[$name]}" 2>/dev/null || true
    wait "${PIDS[$name]}" 2>/dev/null || true
    unset "PIDS[$name]"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port VAR: sets VAR to a loopback port nobody listens on and no
# earlier call returned. (Not `$(free_port)`: a subshell would forget both.)
USED_PORTS=" "
free_port() {
    local port
    while :; do
        port=$(( 20000 + RANDOM % 40000 ))
        case "$USED_PORTS" in *" $port "*) continue ;; esac
        if ! port_open "$port"; then USED_PORTS+="$port "; printf -v "$1" %s "$port"; return; fi
    done
}

wait_port() {
    local port=$1 what=$2 deadline=$(( SECONDS + START_TIMEOUT_S ))
    until port_open "$port"; do
        if [ $SECONDS -ge $deadline ]; then log "$what did not listen on $port"; exit 1; fi
        sleep 0.1
    done
}

# Ports drawn before RANDOM is used for faults would make the schedule
# depend on which ports were busy; draw them from a separate stream.
SAVED_RANDOM_SEED=$SEED
RANDOM=$(( $$ + $(date +%N | sed 's/^0*//;s/^$/0/') ))
for port_name in KAFKA_PORT REDIS_PORT CLOUD_HEARTBEAT_PORT CLOUD_DATA_PORT \
        PROXY_HEARTBEAT_PORT PROXY_DATA_PORT CONTROL_HEARTBEAT_PORT CONTROL_DATA_PORT; do
    free_port "$port_name"
done
RANDOM=$SAVED_RANDOM_SEED
REDIS_URL=redis://127.0.0.1:$REDIS_PORT
log "seed $SEED, $CYCLES cycles, duration $DURATION, work dir $WORK"

start_tansu() {
    start tansu "$TANSU" broker \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine "sqlite://tansu.db"
    wait_port "$KAFKA_PORT" tansu
    local deadline=$(( SECONDS + START_TIMEOUT_S ))
    until "$TANSU" topic create power_topic --broker "tcp://127.0.0.1:$KAFKA_PORT" \
            --partitions 3 >>"$WORK/tansu-topic.log" 2>&1; do
        if [ $SECONDS -ge $deadline ]; then log "cannot create power_topic"; exit 1; fi
        sleep 0.5
    done
}

start_redis() {
    start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
        --save "" --appendonly no --dir "$WORK"
    local deadline=$(( SECONDS + START_TIMEOUT_S ))
    until [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; do
        if [ $SECONDS -ge $deadline ]; then log "redis-server did not answer"; exit 1; fi
        sleep 0.1
    done
}

# The edge authenticates with its own key, as in production: keygen writes
# the edge's key file and prints the cloud's keys-file line.
make_keys() {
    "$EDGEMETER" keygen --edge-id "$EDGE_ID" --out "$WORK/edge.key" >"$WORK/cloud.keys" \
        2>>"$WORK/keygen.log"
}

# The cloud's HTTP API gets a free port (its default, 5006, may be taken).
start_cloud() {
    start cloud "$EDGEMETER" cloud --redis "$REDIS_URL" --listen 127.0.0.1 \
        --heartbeat-port "$CLOUD_HEARTBEAT_PORT" --data-port "$CLOUD_DATA_PORT" \
        --keys "$WORK/cloud.keys" --http 127.0.0.1:0
    wait_port "$CLOUD_DATA_PORT" cloud
}

start_proxies() {
    start proxy-heartbeat "$CHAOS" proxy --listen "127.0.0.1:$PROXY_HEARTBEAT_PORT" \
        --target "127.0.0.1:$CLOUD_HEARTBEAT_PORT" --control "127.0.0.1:$CONTROL_HEARTBEAT_PORT"
    start proxy-data "$CHAOS" proxy --listen "127.0.0.1:$PROXY_DATA_PORT" \
        --target "127.0.0.1:$CLOUD_DATA_PORT" --control "127.0.0.1:$CONTROL_DATA_PORT"
    wait_port "$CONTROL_HEARTBEAT_PORT" proxy-heartbeat
    wait_port "$CONTROL_DATA_PORT" proxy-data
}

start_edge() {
    start edge "$EDGEMETER" edge --kafka "127.0.0.1:$KAFKA_PORT" --cloud 127.0.0.1 \
        --heartbeat-port "$PROXY_HEARTBEAT_PORT" --data-port "$PROXY_DATA_PORT" \
        --db "$DB" --edge-id "$EDGE_ID" --key-file "$WORK/edge.key"
}

# control PORT COMMAND: one line to a proxy's control socket; "ok" expected.
control() {
    local port=$1 command=$2 reply
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf '%s\n' "$command" >&3
    read -r reply <&3 || reply="(no reply)"
    exec 3>&-
    [ "$reply" = ok ] || { log "proxy on $port refused '$command': $reply"; exit 1; }
}
both_proxies() {
    control "$CONTROL_HEARTBEAT_PORT" "$1"
    control "$CONTROL_DATA_PORT" "$1"
}

# The replay spans about 4 s per cycle (a cycle's mean length) plus a few
# seconds unless --speed is given, so that the faults land while data flows.
duration_s() {
    case "$DURATION" in
        *h) echo $(( ${DURATION%h} * 3600 )) ;;
        *m) echo $(( ${DURATION%m} * 60 )) ;;
        *s) echo "${DURATION%s}" ;;
        *) echo "chaos.sh: --duration takes 90s, 3m or 1h" >&2; exit 2 ;;
    esac
}
if [ -z "$SPEED" ]; then
    SPEED=$(( $(duration_s) / (CYCLES * 4 + 6) ))
    [ "$SPEED" -ge 1 ] || SPEED=1
fi
EXPECTED=$("$CHAOS" windows --data "$DATA" --duration "$DURATION")

RUN_START=$SECONDS
make_keys
start_tansu
start_redis
start_cloud
start_proxies
start_edge
start households "$EDGEMETER" households --kafka "127.0.0.1:$KAFKA_PORT" --data "$DATA" \
    --speed "$SPEED" --duration "$DURATION"
log "all up in $(( SECONDS - RUN_START )) s; replaying $DURATION at speed $SPEED ($EXPECTED windows)"

CACHE_LOSSES=""
# One random fault per cycle; the draws come only from the seeded RANDOM.
run_cycle() {
    local cycle=$1 pause_ms
    case $(( RANDOM % 4 )) in
        0)
            pause_ms=$(( RANDOM % 2000 ))
            log "cycle $cycle: SIGKILL the edge, restart after $pause_ms ms"
            stop edge; sleep "$(( pause_ms / 1000 )).$(printf %03d $(( pause_ms % 1000 )))"
            start_edge ;;
        1)
            pause_ms=$(( RANDOM % 2000 ))
            log "cycle $cycle: SIGKILL the cloud, restart after $pause_ms ms"
            stop cloud; sleep "$(( pause_ms / 1000 )).$(printf %03d $(( pause_ms % 1000 )))"
            start_cloud ;;
        2)
            # Up to 7.5 s: past the edge's heartbeat detection (3 misses of
            # 1 s each, about 5 s), so some faults mark the cloud disconnected.
            pause_ms=$(( 500 + RANDOM % 7000 ))
            case $(( RANDOM % 3 )) in
                0) log "cycle $cycle: cut the link for $pause_ms ms"; both_proxies cut ;;
                1) log "cycle $cycle: stall the link for $pause_ms ms"; both_proxies "stall $pause_ms" ;;
                2) log "cycle $cycle: reset the link, then $pause_ms ms"; both_proxies reset ;;
            esac
            sleep "$(( pause_ms / 1000 )).$(printf %03d $(( pause_ms % 1000 )))"
            both_proxies heal ;;
        3)
            log "cycle $cycle: restart Redis (empty)"
            stop redis
            sleep "$(( REDIS_GAP_MS / 1000 )).$(printf %03d $(( REDIS_GAP_MS % 1000 )))"
            CACHE_LOSSES+="${CACHE_LOSSES:+,}$(now_ms)"
            start_redis ;;
    esac
    pause_ms=$(( 1000 + RANDOM % 2000 ))
    sleep "$(( pause_ms / 1000 )).$(printf %03d $(( pause_ms % 1000 )))"
}

for cycle in $(seq 1 "$CYCLES"); do run_cycle "$cycle"; done

log "healing everything"
both_proxies heal
for name in edge cloud redis; do
    if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
        log "$name exited on its own; see $WORK/$name.log"; exit 1
    fi
done

# Converged: the replay is over, and every window is acknowledged with
# nothing queued or in flight.
status_field() { grep -o "\"$1\":[0-9]*" <<<"$2" | cut -d: -f2; }
deadline=$(( SECONDS + CONVERGE_TIMEOUT_S ))
households_done=0
while :; do
    if [ "$households_done" = 0 ] && ! kill -0 "${PIDS[households]}" 2>/dev/null; then
        if wait "${PIDS[households]}"; then households_done=1; unset "PIDS[households]"
        else log "households failed; see $WORK/households.log"; exit 1; fi
        log "households finished"
    fi
    status=$("$EDGEMETER" status --db "$DB" --json 2>/dev/null || echo '{}')
    queued=$(status_field queued "$status"); sent=$(status_field sent "$status")
    acked=$(status_field acked "$status")
    if [ "$households_done" = 1 ] && [ "${queued:-1}" = 0 ] && [ "${sent:-1}" = 0 ] \
            && [ "${acked:-0}" -ge "$EXPECTED" ]; then
        log "converged after $(( SECONDS - RUN_START )) s: $status"
        break
    fi
    if [ $SECONDS -ge $deadline ]; then
        log "not converged within $CONVERGE_TIMEOUT_S s: $status; checking anyway"
        break
    fi
    sleep 0.5
done

log "running the checker ($(( SECONDS - RUN_START )) s so far; seed $SEED)"
# Nothing is printed after the checker, so its JSON stays the last line.
CHECKED=1
set +e
"$CHAOS" check --data "$DATA" --duration "$DURATION" --db "$DB" --redis "$REDIS_URL" \
    --edge-id "$EDGE_ID" --cycles "$CYCLES" ${CACHE_LOSSES:+--cache-loss-ms "$CACHE_LOSSES"}
verdict=$?
set -e
if [ "$verdict" = 0 ] && [ -z "${CHAOS_KEEP_WORK:-}" ]; then KEEP_WORK=0; fi
exit "$verdict"
