# shellcheck shell=bash
# Helpers for the end-to-end suite, sourced by run.sh and the proxy sections. Every process is
# started through start_bg and stopped by its PID; every wait is bounded in count and time; all
# traffic stays on 127.0.0.1.
#
# Needs E2E_TMP (a scratch directory for logs and generated files) to be set before use.

E2E_PIDS=()        # PIDs started by start_bg, in start order
declare -A E2E_PID_OF=() # name -> PID
E2E_PASSED=0
E2E_FAILED=0
E2E_FAILURES=()

log() { printf '[e2e %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# start_bg NAME CMD...: run CMD in the background, stdout+stderr to $E2E_TMP/NAME.log, and
# remember its PID (for stop_all, stop_one and pid_of). A NAME can be reused once its process
# was stopped; the log is appended to.
start_bg() {
    local name=$1
    shift
    "$@" >>"$E2E_TMP/$name.log" 2>&1 </dev/null &
    local pid=$!
    E2E_PIDS+=("$pid")
    E2E_PID_OF[$name]=$pid
    log "started $name (pid $pid): $*"
}

pid_of() { printf '%s' "${E2E_PID_OF[$1]:-}"; }

# stop_pid PID [TIMEOUT_S]: SIGTERM, wait up to TIMEOUT_S (default 5) for it to exit, then
# SIGKILL. Only ever a PID this suite started.
stop_pid() {
    local pid=$1 timeout=${2:-5} i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 20; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid still running after ${timeout}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# stop_one NAME [TIMEOUT_S]: stop the process started as NAME, and forget its PID (so that
# stop_all never signals a PID the system has handed to someone else since).
stop_one() {
    local name=$1 pid p kept=()
    pid=$(pid_of "$name")
    [[ -n $pid ]] || return 0
    stop_pid "$pid" "${2:-5}"
    unset 'E2E_PID_OF[$name]'
    for p in "${E2E_PIDS[@]}"; do
        [[ $p == "$pid" ]] || kept+=("$p")
    done
    E2E_PIDS=("${kept[@]}")
}

# stop_all: stop everything start_bg started, newest first. Registered on EXIT by run.sh.
stop_all() {
    local i
    for ((i = ${#E2E_PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${E2E_PIDS[i]}" 5
    done
    E2E_PIDS=()
    E2E_PID_OF=()
}

# free_port: print a TCP port that is free on 127.0.0.1 now and was not handed out before in
# this run (remembered in a file, as callers use it inside $(...)).
free_port() {
    local port i given="$E2E_TMP/.ports-given"
    touch "$given"
    for ((i = 0; i < 20; i++)); do
        port=$("${E2E_PYTHON:-python3}" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
        if ! grep -qx "$port" "$given"; then
            printf '%s\n' "$port" >>"$given"
            printf '%s\n' "$port"
            return 0
        fi
    done
    log "free_port: no fresh port after 20 tries"
    return 1
}

# http_status URL [CURL_ARGS...]: print the status code of one request (000 when no answer).
http_status() {
    local url=$1
    shift
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" 2>/dev/null || true
}

# wait_http URL STATUS TIMEOUT_S: poll URL (every 0.1 s) until it answers STATUS, at most
# TIMEOUT_S seconds. Returns 1 on timeout.
wait_http() {
    local url=$1 want=$2 timeout=$3 got="" i
    local deadline=$((SECONDS + timeout))
    for ((i = 0; i < timeout * 10 + 1; i++)); do
        got=$(http_status "$url")
        [[ $got == "$want" ]] && return 0
        ((SECONDS >= deadline)) && break
        sleep 0.1
    done
    log "wait_http: $url answered ${got:-nothing}, not $want, within ${timeout}s"
    return 1
}

# wait_pid_exit PID TIMEOUT_S: wait for a process to be gone.
wait_pid_exit() {
    local pid=$1 timeout=$2 i
    for ((i = 0; i < timeout * 20; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.05
    done
    return 1
}

# check NAME CMD...: run CMD; PASS when it exits 0, FAIL otherwise. What CMD prints to stdout
# is the detail shown on a FAIL line (and dropped on PASS).
check() {
    local name=$1 out rc=0
    shift
    out=$("$@" 2>&1) || rc=$?
    if ((rc == 0)); then
        E2E_PASSED=$((E2E_PASSED + 1))
        printf 'PASS: %s\n' "$name"
    else
        E2E_FAILED=$((E2E_FAILED + 1))
        E2E_FAILURES+=("$name")
        out=${out//$'\n'/ | }
        printf 'FAIL: %s (%s)\n' "$name" "${out:0:600}"
    fi
}

# fail NAME DETAIL: record a failure that has no command to run (e.g. a setup step).
fail() {
    E2E_FAILED=$((E2E_FAILED + 1))
    E2E_FAILURES+=("$1")
    printf 'FAIL: %s (%s)\n' "$1" "$2"
}

# summary: print `N passed, M failed` on its own line; non-zero when anything failed.
summary() {
    printf '%d passed, %d failed\n' "$E2E_PASSED" "$E2E_FAILED"
    ((E2E_FAILED == 0))
}

# --- assertions for check ------------------------------------------------------------------
# Each prints what it saw when it fails.

# expect_eq WHAT EXPECTED ACTUAL
expect_eq() {
    [[ $2 == "$3" ]] && return 0
    printf '%s: expected [%s], got [%s]\n' "$1" "$2" "$3"
    return 1
}

# expect_match WHAT REGEX ACTUAL
expect_match() {
    [[ $3 =~ $2 ]] && return 0
    printf '%s: expected to match /%s/, got [%s]\n' "$1" "$2" "$3"
    return 1
}

# --- HTTP requests for checks --------------------------------------------------------------
# request URL [CURL_ARGS...]: one request; sets RESP_STATUS, RESP_HEADERS (raw, CRLF removed)
# and RESP_BODY. Never fails: a transport error leaves RESP_STATUS=000.
request() {
    local url=$1
    shift
    local hdr="$E2E_TMP/resp.headers" body="$E2E_TMP/resp.body"
    : >"$hdr"
    : >"$body"
    RESP_STATUS=$(curl -s --max-time 5 -D "$hdr" -o "$body" -w '%{http_code}' "$@" "$url" 2>/dev/null) ||
        RESP_STATUS=${RESP_STATUS:-000}
    RESP_HEADERS=$(tr -d '\r' <"$hdr")
    RESP_BODY=$(<"$body")
}

# resp_header NAME: the value of response header NAME of the last request (first occurrence),
# or nothing.
resp_header() {
    local name=${1,,} line
    while IFS= read -r line; do
        if [[ ${line,,} == "$name:"* ]]; then
            line=${line#*:}
            line=${line# }
            printf '%s' "$line"
            return 0
        fi
    done <<<"$RESP_HEADERS"
    return 0
}

# resp_header_count NAME: how often response header NAME occurs in the last response.
resp_header_count() {
    local name=${1,,} line n=0
    while IFS= read -r line; do
        [[ ${line,,} == "$name:"* ]] && n=$((n + 1))
    done <<<"$RESP_HEADERS"
    printf '%d' "$n"
}

# upstream_header NAME: the value the upstream echoed for header NAME (lower-case), or the
# literal <absent>.
upstream_header() {
    printf '%s' "$RESP_BODY" | jq -r --arg n "${1,,}" '.headers[$n] // "<absent>"' 2>/dev/null ||
        printf '<no json body>'
}

# upstream_header_names: the header names the upstream saw, space-separated.
upstream_header_names() {
    printf '%s' "$RESP_BODY" | jq -r '.headers | keys | join(" ")' 2>/dev/null ||
        printf '<no json body>'
}

# expect_no_owned_alias: no header name reached the upstream that a CGI-style upstream (PHP,
# WSGI, Rack, nginx's $http_) would read as X-Auth-Subject or X-Auth-Issuer, other than those
# two names themselves (X_Auth_Subject, X.Auth.Subject, X-Auth.Subject, X~Auth~Subject...).
expect_no_owned_alias() {
    local name cgi
    for name in $(upstream_header_names); do
        cgi=${name^^}
        cgi=${cgi//[^A-Z0-9]/_}
        if [[ ($cgi == X_AUTH_SUBJECT || $cgi == X_AUTH_ISSUER) &&
            $name != x-auth-subject && $name != x-auth-issuer ]]; then
            echo "an alias of an owned header reached the upstream: $name ($(upstream_header_names))"
            return 1
        fi
    done
}

# metric_value ADMIN_PORT SERIES: the value of one series of authgate's /metrics, written as it
# appears there (e.g. 'authgate_decisions_total{frontend="nginx",result="deny",reason="expired"}'),
# or 0 when the series does not exist (yet).
metric_value() {
    curl -s --max-time 2 "http://127.0.0.1:$1/metrics" 2>/dev/null |
        awk -v s="$2" 'index($0, s " ") == 1 { v = $2 } END { print (v == "" ? 0 : v) }'
}

# metric_sum ADMIN_PORT REGEX: the sum of every series of authgate's /metrics whose name and
# labels match the awk regex REGEX (e.g. all frontends of one denial reason), 0 when none does.
metric_sum() {
    curl -s --max-time 2 "http://127.0.0.1:$1/metrics" 2>/dev/null |
        awk -v re="$2" '$1 ~ re { v += $2 } END { print v + 0 }'
}
