#!/usr/bin/env bash
# authgate soak: `bash tests/soak/run.sh` (SOAK_SECONDS=30 for a short run).
#
# Holds a bounded load on the release build's `authgate demo` (authgate and its embedded OIDC
# issuer in one process) for SOAK_SECONDS, all on 127.0.0.1: wrk with soak.lua sends forward-auth
# checks whose tokens are a mix of valid (60 %), invalid (20 %: tampered signature, truncated,
# garbage, alg none/HS256, forged expired/issuer/audience) and random-kid (20 %) tokens, minted
# and derived by tokens.py. soak.py samples the process's RSS and open fds, then prints the
# summary block and fails the run on: socket errors or timeouts, a status other than
# 200/401/503, a mismatch between what was sent per reason and what authgate decided, RSS that
# does not plateau, fds not released, more key fetches than the cooldown and TTL allow, a
# failed key fetch, or authgate dying.
#
# Environment (defaults in brackets):
#   SOAK_SECONDS [180]        load duration
#   SOAK_THREADS [2]          wrk threads
#   SOAK_CONNECTIONS [32]     wrk connections (bounded: no more in flight than this)
#   SOAK_SAMPLE_SECONDS [2]   RSS sampling interval
#   SOAK_VALID_TOKENS [12000] distinct valid tokens (more than the verified cache's 10 000)
#   SOAK_RANDOM_KID_TOKENS [2000]
#   SOAK_KEEP_TMP=1           keep the run directory (logs, CSV, metrics) even after a pass;
#                             it is always kept after a failure
#   SOAK_SKIP_INSTALL=1       do not install wrk
#
# Everything it starts (authgate, wrk, the sampler) is stopped by PID on exit.

set -euo pipefail

SOAK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SOAK_DIR/../.." && pwd)"
SECONDS_LOAD=${SOAK_SECONDS:-180}
THREADS=${SOAK_THREADS:-2}
CONNECTIONS=${SOAK_CONNECTIONS:-32}
INTERVAL=${SOAK_SAMPLE_SECONDS:-2}
VALID_TOKENS=${SOAK_VALID_TOKENS:-12000}
RANDOM_KID_TOKENS=${SOAK_RANDOM_KID_TOKENS:-2000}
# keys.unknown_kid_cooldown as the demo runs it: the default, DEFAULT_UNKNOWN_KID_COOLDOWN in
# src/config/raw.rs (README, "Keys"). The demo takes no configuration file.
UNKNOWN_KID_COOLDOWN_S=30
# keys.min_ttl / keys.max_ttl defaults (src/config.rs): the JWKS max-age is clamped to them.
MIN_TTL_S=60
MAX_TTL_S=3600

for value in "$SECONDS_LOAD" "$THREADS" "$CONNECTIONS" "$INTERVAL" "$VALID_TOKENS" "$RANDOM_KID_TOKENS"; do
    [[ $value =~ ^[0-9]+$ ]] && ((value > 0)) || { echo "soak: settings must be positive integers (got '$value')" >&2; exit 2; }
done
((SECONDS_LOAD >= 20)) || { echo "soak: SOAK_SECONDS must be at least 20 (quarters of the load are compared)" >&2; exit 2; }

# stop_pid (SIGTERM, bounded wait, SIGKILL) is the e2e suite's; log() and check() are
# the soak's own, below.
# shellcheck source=tests/e2e/lib.sh
source "$REPO_ROOT/tests/e2e/lib.sh"
log() { printf '[soak %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/authgate-soak.XXXXXX")"
# The interpreter itself, not a version manager's shim, so that the sampler's PID is its own.
PYTHON="$(python3 -c 'import sys; print(sys.executable)')"
AUTHGATE_PID=""
WRK_PID=""
SAMPLER_PID=""
PASSED=0

finish() {
    local rc=$?
    stop_pid "$WRK_PID" 5
    stop_pid "$SAMPLER_PID" 5
    # The demo runs with a zero shutdown grace; in-flight checks drain for at most 10 s.
    stop_pid "$AUTHGATE_PID" 15
    if ((PASSED)) && ((rc == 0)) && [[ ${SOAK_KEEP_TMP:-} != 1 ]]; then
        rm -rf "$RUN_DIR"
    else
        log "logs, metrics and the RSS samples are in $RUN_DIR"
    fi
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- wrk ------------------------------------------------------------------------------------
install_wrk() {
    if command -v wrk >/dev/null 2>&1; then
        return
    fi
    log "apt-get install wrk"
    # Try the package lists as they are first; refresh them only when that fails.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
    fi
}
if [[ ${SOAK_SKIP_INSTALL:-} != 1 ]]; then
    install_wrk
fi
command -v wrk >/dev/null 2>&1 || { log "wrk is not installed"; exit 1; }

# --- build ----------------------------------------------------------------------------------
log "cargo build --release"
build_started=$SECONDS
(cd "$REPO_ROOT" && cargo build --release --quiet)
log "built in $((SECONDS - build_started))s"
AUTHGATE_BIN="$REPO_ROOT/target/release/authgate"

# --- authgate demo --------------------------------------------------------------------------
free_ports() {
    "$PYTHON" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
read -r HTTP_PORT GRPC_PORT ADMIN_PORT ISSUER_PORT <<<"$(free_ports 4)"
ADMIN="http://127.0.0.1:$ADMIN_PORT"
ISSUER="http://127.0.0.1:$ISSUER_PORT"
started_at=$EPOCHREALTIME
"$AUTHGATE_BIN" demo --http-listen "127.0.0.1:$HTTP_PORT" --grpc-listen "127.0.0.1:$GRPC_PORT" \
    --admin-listen "127.0.0.1:$ADMIN_PORT" --issuer-listen "127.0.0.1:$ISSUER_PORT" \
    >"$RUN_DIR/authgate.log" 2>&1 </dev/null &
AUTHGATE_PID=$!
log "authgate demo (pid $AUTHGATE_PID): http $HTTP_PORT, admin $ADMIN_PORT, issuer $ISSUER_PORT"

ready=0
for ((i = 0; i < 300; i++)); do
    kill -0 "$AUTHGATE_PID" 2>/dev/null || break
    if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$ADMIN/readyz" 2>/dev/null) == 200 ]]; then
        ready=1
        break
    fi
    sleep 0.1
done
if ((!ready)); then
    log "authgate did not become ready within 30 s; its log:"
    tail -n 20 "$RUN_DIR/authgate.log" >&2
    exit 1
fi
curl -s --max-time 2 "$ADMIN/version" >"$RUN_DIR/version.json"

# The key set's TTL as authgate derives it: the JWKS max-age clamped to [min_ttl, max_ttl].
max_age=$(curl -s -D - -o /dev/null --max-time 2 "$ISSUER/jwks" | tr -d '\r' |
    sed -nE 's/^cache-control:.*max-age=([0-9]+).*/\1/Ip')
jwks_ttl=${max_age:-600} # keys.default_ttl without a max-age
((jwks_ttl < MIN_TTL_S)) && jwks_ttl=$MIN_TTL_S
((jwks_ttl > MAX_TTL_S)) && jwks_ttl=$MAX_TTL_S

# --- tokens ---------------------------------------------------------------------------------
log "minting $VALID_TOKENS valid tokens at $ISSUER/token"
"$PYTHON" "$SOAK_DIR/tokens.py" "$ISSUER" "$RUN_DIR" --valid "$VALID_TOKENS" \
    --random-kid "$RANDOM_KID_TOKENS" >&2

# One token of each kind before the load: valid -> 200, every other kind -> 401.
check_url="http://127.0.0.1:$HTTP_PORT/auth"
check() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "Authorization: Bearer $1" \
        -H 'X-Forwarded-Method: GET' -H 'X-Forwarded-Uri: /api/items' \
        -H 'X-Forwarded-Host: soak.test' "$check_url" || true
}
preflight_failed=0
while read -r reason token; do
    want=401
    [[ $reason == valid_token ]] && want=200
    got=$(check "$token")
    if [[ $got != "$want" ]]; then
        log "preflight: a $reason token answered $got, not $want"
        preflight_failed=1
    fi
done <"$RUN_DIR/samples.txt"
((!preflight_failed)) || exit 1
log "preflight: one token of each kind answered as expected"

# --- load -----------------------------------------------------------------------------------
curl -s --max-time 2 "$ADMIN/metrics" >"$RUN_DIR/before.prom"
ls "/proc/$AUTHGATE_PID/fd" | wc -l >"$RUN_DIR/fds.txt"
"$PYTHON" "$SOAK_DIR/soak.py" sample "$AUTHGATE_PID" "$RUN_DIR/rss.csv" "$INTERVAL" &
SAMPLER_PID=$!
log "load: ${SECONDS_LOAD}s, $THREADS threads, $CONNECTIONS connections against $check_url"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECONDS_LOAD}s" --timeout 2s --latency \
    -s "$SOAK_DIR/soak.lua" "$check_url" -- "$RUN_DIR/mix.txt" >"$RUN_DIR/wrk.out" 2>&1 &
WRK_PID=$!
# wrk stops itself after -d; the bound here only guards against it hanging.
wrk_deadline=$((SECONDS + SECONDS_LOAD + 60))
while kill -0 "$WRK_PID" 2>/dev/null && ((SECONDS < wrk_deadline)); do
    sleep 1
done
wrk_rc=0
if kill -0 "$WRK_PID" 2>/dev/null; then
    log "wrk still running 60 s after its duration; stopping it"
    stop_pid "$WRK_PID" 5
    wrk_rc=1
else
    wait "$WRK_PID" || wrk_rc=$?
fi
WRK_PID=""
stop_pid "$SAMPLER_PID" 5
SAMPLER_PID=""
((wrk_rc == 0)) || { log "wrk failed ($wrk_rc):"; tail -n 20 "$RUN_DIR/wrk.out" >&2; exit 1; }

# Let the last in-flight checks finish and the closed connections' sockets go.
sleep 1
alive=0
if kill -0 "$AUTHGATE_PID" 2>/dev/null &&
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$ADMIN/healthz" 2>/dev/null) == 200 ]]; then
    alive=1
    curl -s --max-time 2 "$ADMIN/metrics" >"$RUN_DIR/after.prom"
    ls "/proc/$AUTHGATE_PID/fd" | wc -l >>"$RUN_DIR/fds.txt"
else
    : >"$RUN_DIR/after.prom"
    echo 0 >>"$RUN_DIR/fds.txt"
fi
uptime_s=$("$PYTHON" -c "print(round($EPOCHREALTIME - $started_at, 1))")

# --- verdict --------------------------------------------------------------------------------
"$PYTHON" "$SOAK_DIR/soak.py" report "$RUN_DIR" --seconds "$SECONDS_LOAD" --threads "$THREADS" \
    --connections "$CONNECTIONS" --interval "$INTERVAL" --uptime "$uptime_s" \
    --jwks-ttl "$jwks_ttl" --cooldown "$UNKNOWN_KID_COOLDOWN_S" --alive "$alive"
PASSED=1
