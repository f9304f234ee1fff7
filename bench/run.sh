#!/usr/bin/env bash
# authgate's benchmark: the cost of a check against bare servers measured in the same run, on
# loopback, with one valid RS256 token unless said. From a clean clone:
#
#   bash bench/run.sh
#
# It installs what it needs (wrk and h2load from Debian; nginx and Envoy through
# tests/e2e/install.sh), builds release (authgate and the baselines in examples/), writes the
# fixtures (examples/bench_tokens.rs), then starts and measures, alternating A/B/A/B:
#   (a) wrk GET /auth, cache hit              authgate   vs bare axum 0.8 (200 + one header)
#   (b) h2load ext_authz v3 Check, cache hit  authgate   vs bare tonic 0.14 (always allows)
#   (c) a different token per request (20,000 cycled), every one checked in full: authgate
#       with its verified-token cache off (wrk cannot time a single first pass; with the cache
#       on, a first pass adds one SHA-256 and one insert to the signature check)
#                                             authgate   vs bare axum verifying each token with
#                                                           jsonwebtoken (aws-lc-rs)
#   (d) wrk through Envoy (--concurrency 1)   ext_authz gRPC -> authgate vs -> bare tonic;
#                                                           Envoy's jwt_authn for the record
#   (e) wrk through nginx (1 worker)          auth_request -> authgate vs -> bare axum;
#                                                           nginx alone for the record
#   p99 at half of (a)'s and (b)'s maximum (h2load --rps), server CPU per request (from
#   /proc/PID/stat), authgate's RSS idle and after the runs, and the verified-token cache with
#   BENCH_CACHE_TOKENS distinct tokens in it (examples/bench_cache_memory.rs).
#
# Environment:
#   BENCH_SECONDS [10]           length of one measured run
#   BENCH_ROUNDS [2]             A/B pairs per comparison; figures are the mean of the rounds
#   BENCH_CONNECTIONS [64]       wrk and h2load --h1 connections
#   BENCH_CACHE_TOKENS [1000000] tokens for the cache memory figure (0 skips it)
#   BENCH_SKIP_INSTALL=1         use what is installed
#   BENCH_KEEP=1                 keep the work directory (logs, configs, raw outputs)
# Ports 21000-21099 on 127.0.0.1 must be free. Everything it starts is stopped by PID on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECS="${BENCH_SECONDS:-10}"
ROUNDS="${BENCH_ROUNDS:-2}"
CONNS="${BENCH_CONNECTIONS:-64}"
CACHE_TOKENS="${BENCH_CACHE_TOKENS:-1000000}"
WORK="$(mktemp -d /tmp/authgate-bench.XXXXXX)"
ISSUER="https://bench.authgate.test"
AUDIENCE="bench-api"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# --- tools -----------------------------------------------------------------------------------
if [[ ${BENCH_SKIP_INSTALL:-0} != 1 ]]; then
    if ! command -v wrk >/dev/null || ! command -v h2load >/dev/null; then
        log "apt-get install wrk nghttp2-client"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            wrk nghttp2-client >/dev/null
    fi
    bash "$ROOT/tests/e2e/install.sh" >&2
fi
command -v wrk >/dev/null || die "wrk is not installed"
command -v h2load >/dev/null || die "h2load is not installed"
NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"
ENVOY_BIN=""
for candidate in "$ROOT"/tests/e2e/.venv/lib/python3*/site-packages/envoy/_bin/envoy; do
    [[ -x $candidate ]] && ENVOY_BIN=$candidate
done
[[ -x $NGINX_BIN ]] || die "nginx is not installed (tests/e2e/install.sh)"
[[ -n $ENVOY_BIN ]] || die "Envoy is not installed (tests/e2e/install.sh)"

log "cargo build --release (authgate and the baselines)"
(cd "$ROOT" && cargo build --release --quiet --bin authgate --examples)
BIN="$ROOT/target/release"
"$BIN/examples/bench_tokens" "$WORK" 20000 >&2
TOKEN="$(cat "$WORK/token.txt")"

# --- processes -------------------------------------------------------------------------------
# start NAME CMD...: runs CMD in the background with its output in $WORK/NAME.log; sets PID.
PID=""
start() {
    local name=$1
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
}

wait_port() {
    local port=$1 i
    for ((i = 0; i < 100; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "nothing listens on port $port (see the logs in $WORK)"
}

for port in $(seq 21000 21099); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is in use; bench/run.sh needs 21000-21099"
    fi
done

P_AXUM=21000 P_VERIFY=21001 P_TONIC=21002 P_UPSTREAM=21003
P_AG_HTTP=21010 P_AG_GRPC=21011 P_AG_ADMIN=21012
P_AGC_HTTP=21020 P_AGC_GRPC=21021 P_AGC_ADMIN=21022
P_ENVOY_AG=21030 P_ENVOY_TONIC=21031 P_ENVOY_JWT=21032
P_NGINX_AG=21040 P_NGINX_AXUM=21041 P_NGINX_NONE=21042

authgate_config() { # FILE HTTP GRPC ADMIN [EXTRA YAML]
    cat >"$1" <<EOF
${5:-}
listen: {http: "127.0.0.1:$2", grpc: "127.0.0.1:$3", admin: "127.0.0.1:$4"}
log: {level: warn}
shutdown: {grace: 0s, drain_timeout: 1s}
issuers:
  - issuer: $ISSUER
    jwks_file: $WORK/jwks.json
audiences: [$AUDIENCE]
EOF
}

start axum "$BIN/examples/bench_bare_axum" "127.0.0.1:$P_AXUM"
PID_AXUM=$PID
start upstream "$BIN/examples/bench_bare_axum" "127.0.0.1:$P_UPSTREAM"
start verify "$BIN/examples/bench_bare_verify" "127.0.0.1:$P_VERIFY" "$WORK/jwks.json" \
    "$ISSUER" "$AUDIENCE"
PID_VERIFY=$PID
start tonic "$BIN/examples/bench_bare_tonic" "127.0.0.1:$P_TONIC"
PID_TONIC=$PID
authgate_config "$WORK/authgate.yaml" "$P_AG_HTTP" "$P_AG_GRPC" "$P_AG_ADMIN"
start authgate "$BIN/authgate" serve --config "$WORK/authgate.yaml"
PID_AG=$PID
authgate_config "$WORK/authgate-c.yaml" "$P_AGC_HTTP" "$P_AGC_GRPC" "$P_AGC_ADMIN" \
    "verified_cache: {capacity: 0}"
start authgate-c "$BIN/authgate" serve --config "$WORK/authgate-c.yaml"
PID_AGC=$PID
for port in $P_AXUM $P_UPSTREAM $P_VERIFY $P_TONIC $P_AG_HTTP $P_AG_GRPC $P_AGC_HTTP; do
    wait_port "$port"
done

envoy_start() { # NAME LISTEN ADMIN TEMPLATE GRPC_PORT
    local dir="$WORK/envoy-$1"
    mkdir -p "$dir"
    sed -e "s/__LISTEN__/$2/; s/__ADMIN__/$3/; s/__AUTHGATE_GRPC__/$5/; s/__UPSTREAM__/$P_UPSTREAM/" \
        -e "s/__AUTHGATE_HTTP__/$P_AG_HTTP/" \
        -e "s|__JWKS__|$WORK/jwks.json|; s|__ISSUER__|$ISSUER|; s|__AUDIENCE__|$AUDIENCE|" \
        -e '/^    - name: ingress_tls$/,/^  clusters:$/{/^  clusters:$/!d}' \
        "$4" >"$dir/envoy.yaml"
    start "envoy-$1" "$ENVOY_BIN" -c "$dir/envoy.yaml" --disable-hot-restart --concurrency 1 \
        -l error --base-id "$2"
}
envoy_start authgate $P_ENVOY_AG 21050 "$ROOT/deploy/envoy/envoy-grpc.yaml" $P_AG_GRPC
envoy_start tonic $P_ENVOY_TONIC 21051 "$ROOT/deploy/envoy/envoy-grpc.yaml" $P_TONIC
envoy_start jwt_authn $P_ENVOY_JWT 21052 "$ROOT/bench/envoy-jwt-authn.yaml" 0

nginx_start() { # NAME LISTEN AUTH_PORT (empty: no auth_request)
    local dir="$WORK/nginx-$1"
    mkdir -p "$dir"
    sed -e "s/__LISTEN__/$2/; s/__AUTHGATE_HTTP__/${3:-$P_AXUM}/; s/__UPSTREAM__/$P_UPSTREAM/" \
        -e 's|access_log /dev/stdout authgate;|access_log off;|' \
        -e '/__LISTEN_TLS__/d; /__TLS_CERT__/d; /__TLS_KEY__/d; /ssl_verify_client/d' \
        "$ROOT/deploy/nginx/nginx.conf" >"$dir/nginx.conf"
    if [[ -z $3 ]]; then
        sed -i -e '/auth_request \/_authgate;/d' "$dir/nginx.conf"
    fi
    start "nginx-$1" "$NGINX_BIN" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" \
        -g "daemon off; pid $dir/nginx.pid;"
}
nginx_start authgate $P_NGINX_AG $P_AG_HTTP
nginx_start axum $P_NGINX_AXUM $P_AXUM
nginx_start none $P_NGINX_NONE ""
for port in $P_ENVOY_AG $P_ENVOY_TONIC $P_ENVOY_JWT $P_NGINX_AG $P_NGINX_AXUM $P_NGINX_NONE; do
    wait_port "$port"
done

# Every path answers as it must before anything is measured.
expect() { # STATUS CURL_ARGS...
    local want=$1 got
    shift
    got="$(curl -s -o /dev/null -w '%{http_code}' "$@")"
    [[ $got == "$want" ]] || die "expected $want from curl $*, got $got"
}
for port in $P_AG_HTTP $P_AXUM $P_VERIFY; do
    expect 200 -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/auth"
done
expect 401 "http://127.0.0.1:$P_AG_HTTP/auth"
expect 401 "http://127.0.0.1:$P_VERIFY/auth"
# Envoy and Traefik answer their ping before their routes load: retry the first one briefly.
for port in $P_ENVOY_AG $P_ENVOY_TONIC $P_ENVOY_JWT $P_NGINX_AG $P_NGINX_AXUM $P_NGINX_NONE; do
    for ((i = 0; i < 50; i++)); do
        code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
            "http://127.0.0.1:$port/api/items")"
        [[ $code == 200 ]] && break
        sleep 0.1
    done
    [[ $code == 200 ]] || die "port $port: $code for a valid token through the proxy"
done
for port in $P_ENVOY_AG $P_ENVOY_JWT $P_NGINX_AG; do
    expect 401 "http://127.0.0.1:$port/api/items"
done
RSS_IDLE_KIB="$(awk '/^VmRSS/ {print $2}' "/proc/$PID_AG/status")"

# --- measuring -------------------------------------------------------------------------------
CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Results: RESULT[label] = "req/s p50_ms p99_ms cpu_us_per_req", summed over rounds in SUM_*.
declare -A SUM_RPS SUM_P50 SUM_P99 SUM_CPU RUNS

record() { # LABEL RPS P50 P99 CPU
    SUM_RPS[$1]=$(awk -v a="${SUM_RPS[$1]:-0}" -v b="$2" 'BEGIN {print a + b}')
    SUM_P50[$1]=$(awk -v a="${SUM_P50[$1]:-0}" -v b="$3" 'BEGIN {print a + b}')
    SUM_P99[$1]=$(awk -v a="${SUM_P99[$1]:-0}" -v b="$4" 'BEGIN {print a + b}')
    SUM_CPU[$1]=$(awk -v a="${SUM_CPU[$1]:-0}" -v b="$5" 'BEGIN {print a + b}')
    RUNS[$1]=$((${RUNS[$1]:-0} + 1))
    log "$(printf '%-22s %10.0f req/s  p50 %6.3f ms  p99 %6.3f ms  cpu %6.2f us/req' "$@")"
}
mean() { # ARRAY_NAME LABEL
    local -n sums=$1
    awk -v s="${sums[$2]:-0}" -v n="${RUNS[$2]:-1}" 'BEGIN {printf "%.3f", s / n}'
}

# wrk latency text (e.g. 512.00us, 1.20ms, 2.00s) in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}

# wrk_run LABEL PID URL [wrk options] [-- script args]: one wrk run; PID is the server whose CPU
# is counted (0: none).
wrk_run() {
    local label=$1 pid=$2 url=$3 out="$WORK/wrk-$1-${RUNS[$1]:-0}.txt" before=0 after=0
    shift 3
    local options=()
    while (($# > 0)) && [[ $1 != -- ]]; do
        options+=("$1")
        shift
    done
    [[ $pid != 0 ]] && before=$(cpu_ticks "$pid")
    wrk -t1 -c"$CONNS" -d"${SECS}s" --timeout 5s --latency "${options[@]}" "$url" "$@" \
        >"$out" 2>&1 ||
        die "wrk failed: $(cat "$out")"
    [[ $pid != 0 ]] && after=$(cpu_ticks "$pid")
    if grep -q -e 'Non-2xx' -e 'Socket errors' "$out"; then
        die "$label: errors under load: $(grep -e 'Non-2xx' -e 'Socket errors' "$out")"
    fi
    local rps requests p50 p99 cpu
    rps=$(awk '/^Requests\/sec/ {print $2}' "$out")
    requests=$(awk '/requests in/ {print $1}' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
    cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$requests" \
        'BEGIN {printf "%.3f", (n > 0 ? t / hz * 1e6 / n : 0)}')
    record "$label" "$rps" "$p50" "$p99" "$cpu"
}

# h2load_run LABEL PID [h2load args] URL: one h2load run (latency percentiles from its log).
h2load_run() {
    local label=$1 pid=$2 out="$WORK/h2load-$1-${RUNS[$1]:-0}.txt" lat="$WORK/lat-$1.tsv"
    shift 2
    local before after
    before=$(cpu_ticks "$pid")
    h2load -D "$SECS" --warm-up-time 1 --log-file "$lat" "$@" >"$out" 2>&1 ||
        die "h2load failed: $(tail -5 "$out")"
    after=$(cpu_ticks "$pid")
    local done ok rps p50 p99 cpu
    done=$(awk '/^requests:/ {print $6}' "$out")
    ok=$(awk '/^requests:/ {print $8}' "$out")
    [[ -n $done && $done == "$ok" ]] || die "$label: not every request succeeded: $(grep '^requests:' "$out")"
    grep -q 'status codes: [0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx' "$out" ||
        die "$label: non-2xx answers: $(grep 'status codes' "$out")"
    rps=$(awk '/^finished in/ {print $4}' "$out")
    read -r p50 p99 < <(sort -n -k3 "$lat" | awk '{d[NR] = $3} END {
        if (NR == 0) {print 0, 0; exit}
        i50 = int(NR * 0.50); i99 = int(NR * 0.99); if (i50 < 1) i50 = 1; if (i99 < 1) i99 = 1
        printf "%.3f %.3f\n", d[i50] / 1000, d[i99] / 1000 }')
    cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$done" \
        'BEGIN {printf "%.3f", (n > 0 ? t / hz * 1e6 / n : 0)}')
    record "$label" "$rps" "$p50" "$p99" "$cpu"
}

GRPC_BODY=(-d "$WORK/check.grpc" -H 'content-type: application/grpc' -H 'te: trailers')
GRPC_ARGS=(-c 16 -m 16 "${GRPC_BODY[@]}")
CHECK_PATH=/envoy.service.auth.v3.Authorization/Check
AUTH=(-H "Authorization: Bearer $TOKEN")

for ((round = 1; round <= ROUNDS; round++)); do
    log "round $round of $ROUNDS (${SECS}s per run)"
    wrk_run a_authgate "$PID_AG" "http://127.0.0.1:$P_AG_HTTP/auth" "${AUTH[@]}"
    wrk_run a_axum "$PID_AXUM" "http://127.0.0.1:$P_AXUM/auth" "${AUTH[@]}"
    h2load_run b_authgate "$PID_AG" "${GRPC_ARGS[@]}" "http://127.0.0.1:$P_AG_GRPC$CHECK_PATH"
    h2load_run b_tonic "$PID_TONIC" "${GRPC_ARGS[@]}" "http://127.0.0.1:$P_TONIC$CHECK_PATH"

    wrk_run c_authgate "$PID_AGC" "http://127.0.0.1:$P_AGC_HTTP/auth" \
        -s "$ROOT/bench/cycle_tokens.lua" -- "$WORK/tokens.txt"
    wrk_run c_verify "$PID_VERIFY" "http://127.0.0.1:$P_VERIFY/auth" \
        -s "$ROOT/bench/cycle_tokens.lua" -- "$WORK/tokens.txt"

    wrk_run d_envoy_authgate 0 "http://127.0.0.1:$P_ENVOY_AG/api/items" "${AUTH[@]}"
    wrk_run d_envoy_tonic 0 "http://127.0.0.1:$P_ENVOY_TONIC/api/items" "${AUTH[@]}"
    wrk_run d_envoy_jwt_authn 0 "http://127.0.0.1:$P_ENVOY_JWT/api/items" "${AUTH[@]}"
    wrk_run e_nginx_authgate 0 "http://127.0.0.1:$P_NGINX_AG/api/items" "${AUTH[@]}"
    wrk_run e_nginx_axum 0 "http://127.0.0.1:$P_NGINX_AXUM/api/items" "${AUTH[@]}"
    wrk_run e_nginx_alone 0 "http://127.0.0.1:$P_NGINX_NONE/api/items" "${AUTH[@]}"
done

# p99 at half of the maximum, cache hit: h2load paces each connection (--rps is per client),
# one request at a time per connection.
half_rps() { awk -v r="$(mean SUM_RPS "$1")" -v c="$2" 'BEGIN {printf "%.0f", r / 2 / c}'; }
h2load_run half_a_authgate "$PID_AG" --h1 -c "$CONNS" --rps "$(half_rps a_authgate "$CONNS")" \
    "${AUTH[@]}" "http://127.0.0.1:$P_AG_HTTP/auth"
h2load_run half_b_authgate "$PID_AG" -c "$CONNS" -m 1 --rps "$(half_rps b_authgate "$CONNS")" \
    "${GRPC_BODY[@]}" \
    "http://127.0.0.1:$P_AG_GRPC$CHECK_PATH"
RSS_AFTER_KIB="$(awk '/^VmRSS/ {print $2}' "/proc/$PID_AG/status")"

CACHE_LINE="skipped (BENCH_CACHE_TOKENS=0)"
if ((CACHE_TOKENS > 0)); then
    log "verified-token cache with $CACHE_TOKENS tokens (examples/bench_cache_memory.rs)"
    CACHE_LINE="$("$BIN/examples/bench_cache_memory" "$CACHE_TOKENS")"
fi

# --- the table ------------------------------------------------------------------------------
ratio() { awk -v a="$(mean SUM_RPS "$1")" -v b="$(mean SUM_RPS "$2")" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }
row() { # WHAT A_LABEL B_LABEL TARGET
    printf '| %s | %.0f | %.0f | %s | %s |\n' "$1" "$(mean SUM_RPS "$2")" "$(mean SUM_RPS "$3")" \
        "$(ratio "$2" "$3")" "$4"
}
lat() { printf '| %s | %.0f | %.3f | %.3f | %.2f |\n' "$1" "$(mean SUM_RPS "$2")" \
    "$(mean SUM_P50 "$2")" "$(mean SUM_P99 "$2")" "$(mean SUM_CPU "$2")"; }

cpu_ratio=$(awk -v a="$(mean SUM_CPU a_authgate)" -v b="$(mean SUM_CPU a_axum)" \
    'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
{
    echo
    echo "authgate $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), ${SECS}s x $ROUNDS rounds, A/B alternating, mean of rounds"
    echo
    echo "| what | authgate req/s | baseline req/s | ratio | target |"
    echo "|---|---|---|---|---|"
    row "(a) wrk GET /auth, cache hit, vs bare axum" a_authgate a_axum ">= 0.9"
    row "(b) h2load ext_authz Check, cache hit, vs bare tonic" b_authgate b_tonic ">= 0.9"
    row "(c) 20,000 tokens cycled, each checked in full, vs bare axum + jsonwebtoken" c_authgate c_verify ">= 0.9"
    row "(d) wrk via Envoy, ext_authz -> authgate vs -> bare tonic" d_envoy_authgate d_envoy_tonic ">= 0.95"
    row "(e) wrk via nginx, auth_request -> authgate vs -> bare axum" e_nginx_authgate e_nginx_axum ">= 0.95"
    row "for the record: Envoy jwt_authn vs ext_authz -> authgate" d_envoy_jwt_authn d_envoy_authgate "-"
    row "for the record: nginx alone vs auth_request -> authgate" e_nginx_alone e_nginx_authgate "-"
    echo
    echo "| run | req/s | p50 ms | p99 ms | server CPU us/req |"
    echo "|---|---|---|---|---|"
    for label in a_authgate a_axum b_authgate b_tonic c_authgate c_verify half_a_authgate half_b_authgate; do
        lat "$label" "$label"
    done
    echo
    echo "server CPU per cache-hit check: $cpu_ratio x bare axum's per request (target <= 1.25)"
    echo "p99 at half load, cache hit: /auth $(mean SUM_P99 half_a_authgate) ms, Check $(mean SUM_P99 half_b_authgate) ms (target < 2 ms)"
    echo "authgate RSS: $((RSS_IDLE_KIB / 1024)) MiB idle, $((RSS_AFTER_KIB / 1024)) MiB after the runs (target < 32 MiB idle)"
    echo "verified-token cache: $CACHE_LINE"
}
