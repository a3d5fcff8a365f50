#!/usr/bin/env bash
# `BENCH_BACKEND=postgres scripts/bench`: two replicas of the service on one
# throwaway PostgreSQL cluster (scripts/postgres-throwaway), the recording
# scenarios sent through both at once (two wrk, half the connections each),
# and pgbench's built-in simple-update script (-N) on the same cluster with
# the same connection count, in the same run.
#
# Scenarios: 3 new person and certificate per claim; 4 eight people (their
# yearly limit is hit at once); H one Changxing institution's investments
# (every claim locks that institution's one cumulative total: a hot row).
# Settings: BENCH_SECONDS, BENCH_WARMUP, BENCH_CONNECTIONS (total), BENCH_OUT,
# BENCH_BIN (a binary to measure instead of building this tree's),
# SUBSIDY__STORE__POOL_SIZE (per replica, default 8: on 2 cores more
# connections only add database backends competing for them),
# SUBSIDY__SERVER__WORKERS (per replica, default: the cores divided among the
# two replicas, at least 1; the service's own default is one worker per
# core, which for two replicas on one box means twice as many threads as
# cores).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
export BENCH_D="$ROOT/scripts/bench.d"
SECONDS_RUN=${BENCH_SECONDS:-10}
WARMUP=${BENCH_WARMUP:-3}
CONNS=${BENCH_CONNECTIONS:-64}
POOL=${SUBSIDY__STORE__POOL_SIZE:-8}
WORKERS=${SUBSIDY__SERVER__WORKERS:-$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))}
HALF=$((CONNS / 2))

log() { printf '[bench-pg %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

command -v wrk >/dev/null || { log "installing wrk"; apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }; }
if [ -n "${BENCH_BIN:-}" ]; then
    # Another build of the service (e.g. an earlier commit's, for a
    # comparison in the same conditions).
    BIN=$BENCH_BIN
    log "benchmarking $BIN"
else
    log "cargo build --release"
    cargo build --release --quiet --bin subsidy-service
    BIN="$ROOT/target/release/subsidy-service"
fi

TMP=$(mktemp -d -t subsidy-bench-pg.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

ADMIN=$(scripts/postgres-throwaway "$(free_port)" $$)
SERVER=${ADMIN%/*}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
psql -q "$ADMIN" -c "CREATE DATABASE ledger" -c "CREATE DATABASE pgbench_n"
log "cluster $SERVER"

URLS=()
for r in 1 2; do
    port=$(free_port)
    SUBSIDY__STORE__BACKEND=postgres SUBSIDY__STORE__URL="$SERVER/ledger" SUBSIDY__STORE__POOL_SIZE="$POOL" \
        SUBSIDY__SERVER__WORKERS="$WORKERS" SUBSIDY__SERVER__HOST=127.0.0.1 SUBSIDY__SERVER__PORT="$port" SUBSIDY__TELEMETRY__LEVEL=warn \
        "$BIN" >>"$TMP/replica-$r.log" 2>&1 &
    PIDS+=($!)
    URLS+=("http://127.0.0.1:$port")
    for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$TMP/replica-$r.log" >&2; die "replica $r is not ready"; }
done
log "replicas ${URLS[*]} (pool $POOL, workers $WORKERS each)"

RESULTS="$TMP/results.txt"
: >"$RESULTS"
RUN=0
BASE=2000000
# pair SCRIPT ID TITLE: both replicas at once, HALF connections each.
pair() {
    local script=$1 id=$2 title=$3 phase
    for phase in warmup measured; do
        local secs=$SECONDS_RUN
        [ "$phase" = warmup ] && secs=$WARMUP
        [ "$secs" -gt 0 ] || continue
        local outs=() wrks=()
        for r in 0 1; do
            RUN=$((RUN + 1)); BASE=$((BASE + 1000000))
            wrk -t1 -c"$HALF" -d"${secs}s" --latency -s "$BENCH_D/$script" "${URLS[$r]}" -- "$BASE" 1000000 1 "pg$RUN" \
                >"$TMP/wrk-$RUN.txt" 2>&1 &
            outs+=("$TMP/wrk-$RUN.txt")
            wrks+=($!)
        done
        wait "${wrks[@]}" || true
        if [ "$phase" = measured ]; then
            echo "$id|$title|$(grep -h '^BENCH ' "${outs[@]}" | sed 's/^BENCH //' | paste -sd '\t')" >>"$RESULTS"
        fi
    done
}

log "scenario 3: new person per claim"
pair claims.lua 3 "POST /v1/claims, new person each (2 replicas)"
log "scenario 4: eight people"
pair contention.lua 4 "POST /v1/claims, 8 people (2 replicas)"
log "scenario H: one institution's cumulative total"
pair hot_institution.lua H "POST /v1/claims, one institution (2 replicas)"

log "pgbench -N (same cluster, $CONNS connections)"
"$PGBIN/pgbench" -q -i -s 16 "$SERVER/pgbench_n" >/dev/null 2>&1
"$PGBIN/pgbench" -N -M prepared -c "$CONNS" -j 2 -T "$SECONDS_RUN" "$SERVER/pgbench_n" >"$TMP/pgbench.txt" 2>&1
PGB=$(awk '/^tps = / { print $3; exit }' "$TMP/pgbench.txt")
[ -n "$PGB" ] || { cat "$TMP/pgbench.txt" >&2; die "pgbench gave no figure"; }

python3 - "$RESULTS" "$PGB" "$CONNS" "$SECONDS_RUN" "$POOL" "$WORKERS" <<'PY' | tee "${BENCH_OUT:-/dev/null}"
import json, sys
results, pgb, conns, secs, pool, workers = sys.argv[1], float(sys.argv[2]), *sys.argv[3:7]
print(f"PostgreSQL backend, two replicas on one cluster (each: {workers} HTTP worker(s), {pool} database connections); {conns} connections, {secs} s per scenario")
print()
print("| # | scenario | claims/s | × pgbench -N | p50 ms | p99 ms | non-2xx | errors |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for line in open(results):
    sid, title, runs = line.rstrip("\n").split("|", 2)
    rs = [json.loads(x) for x in runs.split("\t") if x]
    rate = sum(r["requests"] / (r["duration_us"] / 1e6) for r in rs)
    p50 = max(r["p50_us"] for r in rs) / 1000
    p99 = max(r["p99_us"] for r in rs) / 1000
    bad = sum(r["non2xx"] + r["unexpected"] for r in rs)
    errs = sum(r["socket_errors"] + r["timeouts"] for r in rs)
    print(f"| {sid} | {title} | {rate:,.0f} | {rate / pgb:.2f} | {p50:.1f} | {p99:.1f} | {bad} | {errs} |")
print(f"| | pgbench -N, same cluster | {pgb:,.0f} tps | 1.00 | | | | |")
print()
print("targets: recorded claims/s ≥ 0.5 × pgbench -N; p99 ≤ 50 ms at 64 connections; 0 non-2xx")
PY
