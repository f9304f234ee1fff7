# shellcheck shell=bash
# The Envoy section of the e2e suite, sourced by run.sh (see there for what it provides).
#
# Runs deploy/envoy/envoy-grpc.yaml (ext_authz gRPC v3) and deploy/envoy/envoy-http.yaml
# (ext_authz HTTP, /envoy/*), templated only for their ports and the test PKI's files, ten
# times in all:
#
#   grpc-main  http-main    in front of the main authgate instance
#   grpc-query http-query   in front of the query instance (?access_token=, strip_upstream)
#   grpc-stale http-stale   in front of the stale instance (max_stale 3s: outage checks)
#   grpc-open  http-open    the same, with the one change that is not a port:
#                           failure_mode_allow: true (authgate must still deny)
#   grpc-kong  http-kong    in front of the Kong parity instance: the password grant through
#                           the plain listener, certificate-bound tokens through the mTLS one
#
# Each Envoy gets its own admin port, runs with --disable-hot-restart (several run at once)
# and --concurrency 1, logs to $E2E_TMP/envoy-NAME/envoy.log; its access log (stdout) goes
# to $E2E_TMP/envoy-NAME.log, flushed every 100 ms (Envoy's default is every 10 s).

ENV_NAMES=(grpc-main http-main grpc-query http-query grpc-stale http-stale grpc-open http-open
    grpc-kong http-kong)
declare -A ENV_PORT=() ENV_ADMIN=() ENV_TLS_PORT=()
for env_name in "${ENV_NAMES[@]}"; do
    ENV_PORT[$env_name]=$(free_port)
    ENV_ADMIN[$env_name]=$(free_port)
    ENV_TLS_PORT[$env_name]=$(free_port)
done
unset env_name

# envoy_start NAME: write $E2E_TMP/envoy-NAME/envoy.yaml from the deploy/ file of the mode in
# NAME (grpc-... or http-...), pointed at the authgate instance in NAME, validate it and start
# Envoy. Does not wait for it (envoy_wait).
envoy_start() {
    local name=$1 mode=${1%%-*} instance=${1#*-} dir="$E2E_TMP/envoy-$1" http_port grpc_port
    # Both files name authgate's HTTP port (checks in HTTP mode, the metadata route in both).
    case $instance in
    main) http_port=$AG_HTTP grpc_port=$AG_GRPC ;;
    query) http_port=$AGQ_HTTP grpc_port=$AGQ_GRPC ;;
    stale | open) http_port=$AGS_HTTP grpc_port=$AGS_GRPC ;;
    kong) http_port=$AGK_HTTP grpc_port=$AGK_GRPC ;;
    *)
        echo "envoy_start: unknown Envoy $name"
        return 1
        ;;
    esac
    if [[ $mode != grpc && $mode != http ]]; then
        echo "envoy_start: unknown Envoy $name"
        return 1
    fi
    mkdir -p "$dir"
    sed -e "s/__LISTEN__/${ENV_PORT[$name]}/g" -e "s/__ADMIN__/${ENV_ADMIN[$name]}/g" \
        -e "s/__AUTHGATE_GRPC__/$grpc_port/g" -e "s/__AUTHGATE_HTTP__/$http_port/g" \
        -e "s/__UPSTREAM__/$UPSTREAM_PORT/g" \
        -e "s/__LISTEN_TLS__/${ENV_TLS_PORT[$name]}/g" \
        -e "s|__TLS_CERT__|$PKI/server.pem|g" -e "s|__TLS_KEY__|$PKI/server.key|g" \
        -e "s|__CLIENT_CA__|$PKI/ca.pem|g" \
        "$REPO_ROOT/deploy/envoy/envoy-$mode.yaml" >"$dir/envoy.yaml"
    if grep -q '__[A-Z_]*__' "$dir/envoy.yaml"; then
        echo "a placeholder is left in $dir/envoy.yaml"
        return 1
    fi
    if [[ $instance == open ]]; then
        # Envoy would let the request through if authgate's answer were an error.
        sed -i 's/^\( *\)failure_mode_allow: false$/\1failure_mode_allow: true/' "$dir/envoy.yaml"
        if [[ $(grep -c '^ *failure_mode_allow: true$' "$dir/envoy.yaml") != 1 ]]; then
            echo "failure_mode_allow: true is not set exactly once in $dir/envoy.yaml"
            return 1
        fi
    fi
    "$ENVOY_BIN" --mode validate -c "$dir/envoy.yaml" --disable-hot-restart -l error || return 1
    start_bg "envoy-$name" "$ENVOY_BIN" -c "$dir/envoy.yaml" --disable-hot-restart \
        --concurrency 1 -l info --log-path "$dir/envoy.log" --file-flush-interval-msec 100
}

# envoy_wait NAME: /public is an anonymous route: 200 once Envoy, authgate and the upstream
# all answer.
envoy_wait() {
    wait_http "http://127.0.0.1:${ENV_PORT[$1]}/public" 200 20
}

# env_stat NAME STAT: one counter of Envoy NAME's admin /stats (0 when it does not exist).
env_stat() {
    curl -s --max-time 2 "http://127.0.0.1:${ENV_ADMIN[$1]}/stats?filter=^$2\$" 2>/dev/null |
        awk -F': ' -v s="$2" '$1 == s { v = $2 } END { print (v == "" ? 0 : v) }'
}

# --- checks (each runs in a subshell through `check`; stdout is the failure detail) -----------

# env_url NAME PATH
env_url() { printf 'http://127.0.0.1:%s%s' "${ENV_PORT[$1]}" "$2"; }

# env_expect_no_leak: neither the upstream nor the client saw another spelling of an identity
# header or x-envoy-auth-headers-to-remove (authgate's instruction to Envoy).
env_expect_no_leak() {
    local names
    expect_no_owned_alias || return 1
    names=$(upstream_header_names)
    if [[ " $names " == *" x-envoy-auth-headers-to-remove "* ]]; then
        echo "x-envoy-auth-headers-to-remove reached the upstream: $names"
        return 1
    fi
    expect_eq "x-envoy-auth-headers-to-remove at the client" "" \
        "$(resp_header x-envoy-auth-headers-to-remove)"
}

# env_expect_allow NAME PATH TOKEN [CURL_ARGS...]: 200 from the upstream, which saw the IdP's
# client as X-Auth-Subject and the issuer as X-Auth-Issuer, once each.
env_expect_allow() {
    local name=$1 path=$2 token=$3
    shift 3
    local auth=()
    [[ -n $token ]] && auth=(-H "Authorization: Bearer $token")
    request "$(env_url "$name" "$path")" "${auth[@]}" "$@"
    expect_eq status 200 "$RESP_STATUS" || { echo "body: ${RESP_BODY:0:200}"; return 1; }
    expect_eq "upstream x-auth-subject" "$IDP_CLIENT" "$(upstream_header x-auth-subject)" &&
        expect_eq "upstream x-auth-issuer" "$IDP_URL" "$(upstream_header x-auth-issuer)" &&
        env_expect_no_leak
}

# env_expect_deny NAME PATH STATUS CHALLENGE_REGEX [CURL_ARGS...]: expect_denied through Envoy NAME.
env_expect_deny() {
    local name=$1 path=$2
    shift 2
    expect_denied "$(env_url "$name" "$path")" "$@"
}

# env_admin_of NAME: authgate's admin port behind Envoy NAME. env_frontend_of NAME: the
# frontend label of authgate's decisions from it.
env_admin_of() {
    case ${1#*-} in
    main) printf '%s' "$AG_ADMIN" ;;
    query) printf '%s' "$AGQ_ADMIN" ;;
    *) printf '%s' "$AGS_ADMIN" ;;
    esac
}
env_frontend_of() {
    if [[ ${1%%-*} == grpc ]]; then printf grpc; else printf envoy_http; fi
}

# env_expect_deny_for REASON NAME PATH STATUS CHALLENGE_REGEX [CURL_ARGS...]: as
# env_expect_deny, and authgate counted exactly one denial with REASON from this frontend.
env_expect_deny_for() {
    local reason=$1
    shift
    expect_counted "$(env_admin_of "$1")" "$(env_frontend_of "$1")" "$reason" env_expect_deny "$@"
}

ENV_REALM_ONLY='^Bearer realm="authgate"$'
ENV_INVALID_TOKEN='^Bearer realm="authgate", error="invalid_token"'
ENV_INVALID_REQUEST='^Bearer realm="authgate", error="invalid_request"'

env_expect_alg() {
    expect_eq "alg of the IdP's token" "$3" "$(jwt_header "$2" alg)" &&
        env_expect_allow "$1" "/api/items?page=1" "$2"
}

env_expect_expired() {
    local name=$1 token exp
    token=$(mint_expired)
    exp=$(jwt_claim "$token" exp)
    if ! [[ $exp =~ ^[0-9]+$ ]] || ((exp >= $(date +%s))); then
        echo "the short-lived token is not expired (exp=$exp, now=$(date +%s))"
        return 1
    fi
    env_expect_deny_for expired "$name" /api/items 401 "$ENV_INVALID_TOKEN" -H "Authorization: Bearer $token"
}

env_expect_body_to_upstream_only() {
    env_expect_allow "$1" /api/items "$2" -X POST --data-binary 'hello' || return 1
    expect_eq "upstream method" POST "$(printf '%s' "$RESP_BODY" | jq -r .method)" &&
        expect_eq "upstream content-length" 5 "$(upstream_header content-length)"
}

# env_expect_spoof_dropped NAME SUBJECT_NAME ISSUER_NAME TOKEN: a valid token plus
# client-sent identity headers under these names: the upstream sees authgate's values only.
# Underscore spellings are dropped by Envoy itself (headers_with_underscores_action:
# DROP_HEADER), which its counter shows; dot spellings are named by authgate in
# headers_to_remove (gRPC) or x-envoy-auth-headers-to-remove (HTTP mode), which Envoy applies.
# The request still goes through.
env_expect_spoof_dropped() {
    local name=$1 subject=$2 issuer=$3 token=$4 before after
    before=$(env_stat "$name" http1.dropped_headers_with_underscores)
    env_expect_allow "$name" /api/items "$token" -H "$subject: admin" -H "$issuer: https://evil.example" ||
        return 1
    after=$(env_stat "$name" http1.dropped_headers_with_underscores)
    if [[ $subject == *_* ]]; then
        expect_eq "underscore headers dropped by Envoy" 2 "$((after - before))"
    fi
}

# On the anonymous route /public authgate allows without a token and has no identity: what
# the client sent under the owned names must not reach the upstream (gRPC: headers_to_remove;
# HTTP: x-envoy-auth-headers-to-remove, which Envoy applies).
env_expect_anonymous_without_identity() {
    request "$(env_url "$1" /public/info)" \
        -H "X-Auth-Subject: admin" -H "X_Auth_Subject: admin" -H "X.Auth.Subject: admin" \
        -H "x-auth-issuer: https://evil.example" -H "X-Auth.Issuer: https://evil.example"
    expect_eq status 200 "$RESP_STATUS" || return 1
    expect_eq "upstream x-auth-subject" "<absent>" "$(upstream_header x-auth-subject)" &&
        expect_eq "upstream x-auth-issuer" "<absent>" "$(upstream_header x-auth-issuer)" &&
        env_expect_no_leak
}

# Two Authorization headers: Envoy joins them with `,` into one value before authgate sees
# them; authgate splits it again where a new credential starts: invalid_request (400), in both
# modes.
env_expect_two_headers_denied() {
    local name=$1 token=$2
    env_expect_deny_for multiple_tokens "$name" /api/items 400 "$ENV_INVALID_REQUEST" \
        -H "Authorization: Bearer $token" -H "Authorization: Bearer $token"
}

# env_expect_authorization_upstream NAME TOKEN EXPECTED: the upstream got the Authorization
# header as EXPECTED (`Bearer TOKEN` or <absent>).
env_expect_authorization_upstream() {
    env_expect_allow "$1" /api/items "$2" || return 1
    expect_eq "upstream authorization" "$3" "$(upstream_header authorization)"
}

# gRPC, strip_upstream on: the query token is allowed and removed from the upstream's path,
# the other parameters kept in order.
env_expect_query_stripped() {
    env_expect_allow grpc-query "/api/items?x=1&access_token=$1&y=2" "" || return 1
    expect_eq "upstream path" "/api/items?x=1&y=2" "$(printf '%s' "$RESP_BODY" | jq -r .path)" &&
        expect_eq "upstream authorization" "<absent>" "$(upstream_header authorization)"
}

# HTTP mode: the query token is allowed; Envoy's HTTP mode has no way for the auth service to
# remove a query parameter, so the upstream sees the URI as sent.
env_expect_query_kept() {
    env_expect_allow http-query "/api/items?x=1&access_token=$1&y=2" "" || return 1
    expect_eq "upstream path" "/api/items?x=1&access_token=$1&y=2" "$(printf '%s' "$RESP_BODY" | jq -r .path)"
}

# env_expect_token_not_logged NAME SECRET: neither Envoy's access log and own log nor
# authgate's log holds SECRET; the access log has the request.
env_expect_token_not_logged() {
    local name=$1 secret=$2 file
    for file in "$E2E_TMP/envoy-$name.log" "$E2E_TMP/envoy-$name/envoy.log" "$E2E_TMP/authgate-query.log"; do
        if grep -qF "$secret" "$file"; then
            echo "the token is in $file"
            return 1
        fi
    done
    env_wait_log "$name" '"GET /api/items HTTP/1.1" 200'
}

# env_wait_log NAME TEXT: Envoy flushes its access log every 100 ms here (envoy_start); wait
# (bounded) until the access log of NAME holds TEXT.
env_wait_log() {
    local i
    for ((i = 0; i < 30; i++)); do
        grep -qF "$2" "$E2E_TMP/envoy-$1.log" && return 0
        sleep 0.1
    done
    echo "no line with [$2] in $E2E_TMP/envoy-$1.log"
    return 1
}

# gRPC: authgate's dynamic metadata (subject) reaches Envoy's access log.
env_expect_metadata_logged() {
    env_expect_allow grpc-main /api/metadata-probe "$1" || return 1
    env_wait_log grpc-main "\"GET /api/metadata-probe HTTP/1.1\" 200 - " || return 1
    local line
    line=$(grep -F '/api/metadata-probe' "$E2E_TMP/envoy-grpc-main.log" | tail -n 1)
    expect_match "access log line" " sub=$IDP_CLIENT\$" "$line"
}

# After `idp_restart --rotate`: see expect_rotation_after (run.sh).
env_expect_rotation_after() {
    expect_rotation_after env_expect_allow "$1" "$2" "$3" "$4"
}

# env_expect_outage_denied NAME STATUS TOKEN: during the outage every one of 5 requests gets
# STATUS with the realm challenge and Retry-After, never reaches the upstream, and is counted
# by authgate as keys_unavailable and by Envoy as denied (not as an error it could fail open
# on: ext_authz.error and failure_mode_allowed stay unchanged).
env_expect_outage_denied() {
    local name=$1 status=$2 token=$3 i before after series
    local denied_before error_before open_before
    series="authgate_decisions_total{frontend=\"$(env_frontend_of "$name")\",result=\"deny\",reason=\"keys_unavailable\"}"
    before=$(metric_value "$AGS_ADMIN" "$series")
    denied_before=$(env_stat "$name" http.ingress.ext_authz.denied)
    error_before=$(env_stat "$name" http.ingress.ext_authz.error)
    open_before=$(env_stat "$name" http.ingress.ext_authz.failure_mode_allowed)
    for ((i = 0; i < 5; i++)); do
        request "$(env_url "$name" /api/items)" -H "Authorization: Bearer $token"
        expect_eq "status (request $i)" "$status" "$RESP_STATUS" || return 1
        expect_match "Retry-After (request $i)" '^[0-9]+$' "$(resp_header retry-after)" || return 1
        expect_match "WWW-Authenticate (request $i)" "$ENV_REALM_ONLY" "$(resp_header www-authenticate)" ||
            return 1
        [[ $RESP_BODY != *'"headers"'* ]] || { echo "the upstream answered"; return 1; }
    done
    after=$(metric_value "$AGS_ADMIN" "$series")
    expect_eq "denials counted as keys_unavailable" 5 "$((after - before))" &&
        expect_eq "Envoy ext_authz.denied" 5 "$(($(env_stat "$name" http.ingress.ext_authz.denied) - denied_before))" &&
        expect_eq "Envoy ext_authz.error" 0 "$(($(env_stat "$name" http.ingress.ext_authz.error) - error_before))" &&
        expect_eq "Envoy ext_authz.failure_mode_allowed" 0 \
            "$(($(env_stat "$name" http.ingress.ext_authz.failure_mode_allowed) - open_before))"
}

# env_expect_readme_in_sync FILE: deploy/envoy/README.md shows FILE exactly (between its
# `<!-- begin FILE -->` and `<!-- end FILE -->` markers, inside a yaml fence).
env_expect_readme_in_sync() {
    local file=$1 shown
    shown=$(awk -v b="<!-- begin $file -->" -v e="<!-- end $file -->" '
        $0 == e { inside = 0 }
        inside && !/^```/ { print }
        $0 == b { inside = 1 }' "$REPO_ROOT/deploy/envoy/README.md")
    if [[ $shown != "$(<"$REPO_ROOT/deploy/envoy/$file")" ]]; then
        echo "deploy/envoy/README.md does not show $file as it is:"
        diff <(printf '%s\n' "$shown") "$REPO_ROOT/deploy/envoy/$file" | head -n 10
        return 1
    fi
}

# --- run ---------------------------------------------------------------------------------------
check "envoy grpc: deploy/envoy/README.md shows envoy-grpc.yaml exactly" \
    env_expect_readme_in_sync envoy-grpc.yaml
check "envoy http: deploy/envoy/README.md shows envoy-http.yaml exactly" \
    env_expect_readme_in_sync envoy-http.yaml

env_ok=1
for env_name in "${ENV_NAMES[@]}"; do
    if ! envoy_start "$env_name" >>"$E2E_TMP/envoy-setup.log" 2>&1; then
        fail "envoy ${env_name%%-*}: start $env_name" "see $E2E_TMP/envoy-setup.log"
        env_ok=0
    fi
done
if ((env_ok)); then
    for env_name in "${ENV_NAMES[@]}"; do
        if ! envoy_wait "$env_name" >>"$E2E_TMP/envoy-setup.log" 2>&1; then
            fail "envoy ${env_name%%-*}: $env_name answers" "see $E2E_TMP/envoy-$env_name/envoy.log"
            env_ok=0
        fi
    done
fi
unset env_name

if ((env_ok)); then
    env_token=$(mint urn:authgate:rs256)
    for env_mode in grpc http; do
        env_main=$env_mode-main
        for env_alg in RS256 PS256 ES256 EdDSA; do
            check "envoy $env_mode: $env_alg token is allowed; the upstream gets X-Auth-Subject and X-Auth-Issuer" \
                env_expect_alg "$env_main" "$(mint "urn:authgate:${env_alg,,}")" "$env_alg"
        done

        check "envoy $env_mode: no token is 401 with WWW-Authenticate: Bearer realm=\"authgate\"" \
            env_expect_deny_for missing_token "$env_main" /api/items 401 "$ENV_REALM_ONLY"
        check "envoy $env_mode: tampered token is 401 invalid_token" \
            env_expect_deny_for bad_signature "$env_main" /api/items 401 "$ENV_INVALID_TOKEN" \
            -H "Authorization: Bearer $(tamper "$env_token")"
        check "envoy $env_mode: expired token is 401 invalid_token" env_expect_expired "$env_main"
        check "envoy $env_mode: token for another audience (urn:other) is 401 invalid_token" \
            env_expect_deny_for wrong_audience "$env_main" /api/items 401 "$ENV_INVALID_TOKEN" \
            -H "Authorization: Bearer $(mint urn:other)"
        check "envoy $env_mode: empty Bearer is 400 invalid_request" \
            env_expect_deny_for empty_token "$env_main" /api/items 400 "$ENV_INVALID_REQUEST" \
            -H "Authorization: Bearer "
        check "envoy $env_mode: missing scope is 403 with the insufficient_scope challenge" \
            env_expect_deny_for insufficient_scope "$env_main" /admin/users 403 \
            '^Bearer realm="authgate", error="insufficient_scope", .*scope="api:admin"' \
            -H "Authorization: Bearer $env_token"
        check "envoy $env_mode: route with action deny is 403 without a challenge" \
            env_expect_deny_for route_denied "$env_main" /denied/x 403 "" -H "Authorization: Bearer $env_token"
        check "envoy $env_mode: request body goes to the upstream (not to authgate)" \
            env_expect_body_to_upstream_only "$env_main" "$env_token"

        for env_names in "X-Auth-Subject X-Auth-Issuer" "x-auth-subject x-auth-issuer" \
            "X_Auth_Subject X_Auth_Issuer" "X.Auth.Subject X.Auth.Issuer" \
            "X-Auth.Subject x.auth-issuer"; do
            # shellcheck disable=SC2086 # two words on purpose
            check "envoy $env_mode: client-sent ${env_names% *} never reaches the upstream as identity" \
                env_expect_spoof_dropped "$env_main" $env_names "$env_token"
        done
        check "envoy $env_mode: client-sent X-Auth-Subject on an anonymous route does not reach the upstream" \
            env_expect_anonymous_without_identity "$env_main"
        check "envoy $env_mode: two Authorization headers are denied (never reach the upstream)" \
            env_expect_two_headers_denied "$env_main" "$env_token"
        check "envoy $env_mode: ?access_token= is ignored where the query source is off (401, no token)" \
            env_expect_deny_for missing_token "$env_main" "/api/items?access_token=$env_token" 401 "$ENV_REALM_ONLY"
        check "envoy $env_mode: header and query token together are 400 invalid_request" \
            env_expect_deny_for multiple_tokens "$env_mode-query" "/api/items?access_token=$env_token" 400 \
            "$ENV_INVALID_REQUEST" -H "Authorization: Bearer $env_token"
    done

    check "envoy grpc: without strip_upstream the Authorization header reaches the upstream" \
        env_expect_authorization_upstream grpc-main "$env_token" "Bearer $env_token"
    check "envoy grpc: with strip_upstream the Authorization header is removed upstream" \
        env_expect_authorization_upstream grpc-query "$env_token" "<absent>"
    check "envoy grpc: ?access_token= is allowed and removed from the upstream's path (strip_upstream)" \
        env_expect_query_stripped "$env_token"
    check "envoy http: ?access_token= is allowed; the upstream's path keeps it (HTTP mode cannot strip)" \
        env_expect_query_kept "$env_token"
    check "envoy http: with strip_upstream the Authorization header is removed upstream" \
        env_expect_authorization_upstream http-query "$env_token" "<absent>"
    check "envoy grpc: the query token is in no log (Envoy access and own log, authgate)" \
        env_expect_token_not_logged grpc-query "${env_token##*.}"
    check "envoy http: the query token is in no log (Envoy access and own log, authgate)" \
        env_expect_token_not_logged http-query "${env_token##*.}"
    check "envoy grpc: authgate's dynamic metadata (subject) reaches Envoy's access log" \
        env_expect_metadata_logged "$env_token"

    for env_mode in grpc http; do
        check "envoy $env_mode: curl --user john:doe reaches the upstream as Bearer <john's token> (private_key_jwt at the IdP); a wrong password is 401 Basic+Bearer twice for one exchange" \
            expect_password_flow "$(env_url "$env_mode-kong" "")" "envoy-$env_mode"
        check "envoy $env_mode: a token in a cookie or in X-Api-Token (token sources) reaches the upstream as its subject" \
            expect_token_sources "$(env_url "$env_mode-kong" "")"
        check "envoy $env_mode: an opaque token is introspected and reaches the upstream with X-Auth-Issuer (no sub: no X-Auth-Subject); the second request is a cache hit" \
            expect_opaque_token "$(env_url "$env_mode-kong" "")"
        check "envoy $env_mode: an opaque token revoked at the IdP is 401 invalid_token once cache_ttl (2 s) has passed" \
            expect_revoked_opaque "$(env_url "$env_mode-kong" "")"
        check "envoy $env_mode: a DPoP-bound token with a proof for the URL called passes; as Bearer, a replayed proof, a proof for another path or for https are 401" \
            expect_dpop_token "$(env_url "$env_mode-kong" "")"
        check "envoy $env_mode: over TLS a DPoP proof names https:// (the edge Envoy's scheme); one for http:// is 401" \
            expect_dpop_tls "https://127.0.0.1:${ENV_TLS_PORT[$env_mode-kong]}/api/items" --cacert "$PKI/ca.pem"
        check "envoy $env_mode: /.well-known/oauth-protected-resource is authgate's metadata (ext_authz off on its route); a 401 names it in resource_metadata" \
            expect_resource_metadata "$(env_url "$env_mode-kong" "")"
        check "envoy $env_mode: with the password method on, a bearer token reaches the upstream unchanged" \
            env_expect_authorization_upstream "$env_mode-kong" "$env_token" "Bearer $env_token"
        check "envoy $env_mode: a certificate-bound token passes the mTLS listener with its client certificate only" \
            expect_bound_token "https://127.0.0.1:${ENV_TLS_PORT[$env_mode-kong]}/api/items" \
            --cacert "$PKI/ca.pem"
    done

    # Not through check: the IdP restart must happen in this shell (its PID is tracked here).
    env_before_rotation=$env_token
    env_authgate_pid=$(pid_of authgate-main)
    if idp_restart --rotate; then
        env_after_rotation=$(mint urn:authgate:rs256)
        for env_mode in grpc http; do
            check "envoy $env_mode: key rotation at the IdP is picked up without restarting authgate" \
                env_expect_rotation_after "$env_mode-main" "$env_before_rotation" "$env_after_rotation" \
                "$env_authgate_pid"
        done
    else
        for env_mode in grpc http; do
            fail "envoy $env_mode: key rotation at the IdP is picked up without restarting authgate" \
                "the IdP did not come back; see $E2E_TMP/idp.log"
        done
    fi

    env_token=$(mint urn:authgate:es256)
    for env_name in grpc-stale http-stale grpc-open http-open; do
        check "envoy ${env_name%%-*}: the stale instance allows while the IdP is up ($env_name)" \
            env_expect_allow "$env_name" /api/items "$env_token"
    done
    if idp_outage_begin; then
        check "envoy grpc: IdP down and keys past max_stale: 503 with Retry-After (never 200)" \
            env_expect_outage_denied grpc-stale 503 "$env_token"
        check "envoy grpc: ... and with failure_mode_allow: true still 503, never 200" \
            env_expect_outage_denied grpc-open 503 "$env_token"
        check "envoy http: IdP down and keys past max_stale: 401 with Retry-After (never 200 or 5xx)" \
            env_expect_outage_denied http-stale 401 "$env_token"
        check "envoy http: ... and with failure_mode_allow: true still 401, never 200" \
            env_expect_outage_denied http-open 401 "$env_token"
        for env_mode in grpc http; do
            check "envoy $env_mode: IdP down within max_stale: still allowed" \
                env_expect_allow "$env_mode-main" /api/items "$env_token"
        done
    else
        for env_mode in grpc http; do
            fail "envoy $env_mode: IdP down and keys past max_stale" \
                "the stale instance stayed ready after the IdP stopped"
        done
    fi
    if idp_outage_end; then
        for env_name in grpc-stale http-stale grpc-open http-open; do
            check "envoy ${env_name%%-*}: the stale instance allows again once the IdP is back ($env_name)" \
                env_expect_allow "$env_name" /api/items "$env_token"
        done
    else
        for env_mode in grpc http; do
            fail "envoy $env_mode: IdP back after the outage" "see $E2E_TMP/idp.log"
        done
    fi
    unset env_token env_mode env_main env_alg env_names env_name env_before_rotation \
        env_after_rotation env_authgate_pid
fi
unset env_ok
