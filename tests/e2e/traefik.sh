# shellcheck shell=bash
# The Traefik section of the e2e suite, sourced by run.sh (see there for what it provides).
#
# Runs deploy/traefik/{traefik.yml,dynamic.yml}, templated only for their ports, in front of
# the main authgate instance, the query-token one and the short-max_stale one. Two more
# Traefik processes run variants that the deploy files must be compared with:
#   noalias  the deploy files without the entryPoint's `aliasHeadersStrategy: delete` line, to
#            show what the strip middleware alone does (and does not) remove;
#   down     the deploy files pointed at a port where nothing listens (authgate unreachable).
# Each Traefik runs in its own directory under $E2E_TMP (the static file names dynamic.yml
# relative to the working directory) and logs (its own log and the access log) to
# $E2E_TMP/traefik-NAME.log. All of them are stopped at the end of the section.

TRF_MAIN=$(free_port)
TRF_QUERY=$(free_port)
TRF_STALE=$(free_port)
TRF_NOALIAS=$(free_port)
TRF_KONG=$(free_port)
TRF_DOWN=$(free_port)
TRF_NOWHERE=$(free_port) # nothing listens here: authgate "unreachable"
TRF_FRONTEND=forward_auth

# trf_start NAME AUTHGATE_HTTP_PORT LISTEN_PORT [VARIANT]: write the configs and start Traefik
# (not waiting: trf_wait_routed does). VARIANT noalias drops the aliasHeadersStrategy line.
trf_start() {
    local name=$1 authgate_port=$2 listen=$3 variant=${4:-} dir="$E2E_TMP/traefik-$1"
    mkdir -p "$dir"
    sed -e "s/__LISTEN__/$listen/g" "$REPO_ROOT/deploy/traefik/traefik.yml" >"$dir/traefik.yml"
    sed -e "s/__AUTHGATE_HTTP__/$authgate_port/g" -e "s/__UPSTREAM__/$UPSTREAM_PORT/g" \
        "$REPO_ROOT/deploy/traefik/dynamic.yml" >"$dir/dynamic.yml"
    if [[ $variant == noalias ]]; then
        grep -q '^ *aliasHeadersStrategy: delete$' "$dir/traefik.yml" ||
            { echo "no aliasHeadersStrategy line in traefik.yml"; return 1; }
        sed -i '/^ *aliasHeadersStrategy: delete$/d' "$dir/traefik.yml"
    fi
    if grep -q '__[A-Z_]*__' "$dir/traefik.yml" "$dir/dynamic.yml"; then
        echo "a placeholder is left in $dir"
        return 1
    fi
    # env -C: the working directory for the relative providers.file.filename; env execs
    # Traefik, so the PID start_bg records is Traefik's own.
    start_bg "traefik-$name" env -C "$dir" "$TRAEFIK_BIN" --configFile=traefik.yml
}

# trf_wait_routed NAME LISTEN_PORT WANT: Traefik answers its entryPoint before the file
# provider's routes are loaded (404 until then): wait, bounded, until /public answers WANT
# (200 through authgate's anonymous route; 500 where authgate cannot be reached).
trf_wait_routed() {
    local name=$1 listen=$2 want=$3 pid
    pid=$(pid_of "traefik-$name")
    if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
        echo "traefik $name is not running"
        return 1
    fi
    wait_http "http://127.0.0.1:$listen/public" "$want" 15
}

# --- checks (each runs in a subshell through `check`; stdout is the failure detail) -----------

# trf_expect_allow PORT PATH TOKEN [CURL_ARGS...]: 200 from the upstream, which saw the IdP's
# client as X-Auth-Subject and the issuer as X-Auth-Issuer, exactly, and no alias of either.
trf_expect_allow() {
    local port=$1 path=$2 token=$3
    shift 3
    local auth=()
    [[ -n $token ]] && auth=(-H "Authorization: Bearer $token")
    request "http://127.0.0.1:$port$path" "${auth[@]}" "$@"
    expect_eq status 200 "$RESP_STATUS" || { echo "body: ${RESP_BODY:0:200}"; return 1; }
    expect_eq "upstream x-auth-subject" "$IDP_CLIENT" "$(upstream_header x-auth-subject)" &&
        expect_eq "upstream x-auth-issuer" "$IDP_URL" "$(upstream_header x-auth-issuer)" &&
        expect_no_owned_alias
}

# trf_expect_deny PORT PATH STATUS CHALLENGE_REGEX [CURL_ARGS...]: expect_denied through
# Traefik (which passes authgate's answer to the client as it is).
trf_expect_deny() {
    local port=$1 path=$2
    shift 2
    expect_denied "http://127.0.0.1:$port$path" "$@"
}

trf_admin_of() {
    case $1 in
    "$TRF_QUERY") printf '%s' "$AGQ_ADMIN" ;;
    "$TRF_STALE") printf '%s' "$AGS_ADMIN" ;;
    *) printf '%s' "$AG_ADMIN" ;;
    esac
}

# trf_expect_deny_for REASON PORT PATH STATUS CHALLENGE_REGEX [CURL_ARGS...]: as
# trf_expect_deny, and authgate counted exactly one forward_auth denial with REASON for it.
trf_expect_deny_for() {
    local reason=$1
    shift
    expect_counted "$(trf_admin_of "$1")" "$TRF_FRONTEND" "$reason" trf_expect_deny "$@"
}

TRF_REALM_ONLY='^Bearer realm="authgate"$'
TRF_INVALID_TOKEN='^Bearer realm="authgate", error="invalid_token"'
TRF_INVALID_REQUEST='^Bearer realm="authgate", error="invalid_request"'

trf_expect_alg() {
    expect_eq "alg of the IdP's token" "$2" "$(jwt_header "$1" alg)" &&
        trf_expect_allow "$TRF_MAIN" /api/items?page=1 "$1"
}

trf_expect_expired() {
    local token exp
    token=$(mint_expired)
    exp=$(jwt_claim "$token" exp)
    if ! [[ $exp =~ ^[0-9]+$ ]] || ((exp >= $(date +%s))); then
        echo "the short-lived token is not expired (exp=$exp, now=$(date +%s))"
        return 1
    fi
    trf_expect_deny_for expired "$TRF_MAIN" /api/items 401 "$TRF_INVALID_TOKEN" -H "Authorization: Bearer $token"
}

# Every spelling of the owned headers at once, with the values a spoofer would send.
TRF_SPOOF_HEADERS=(
    -H "X-Auth-Subject: admin" -H "x-auth-subject: admin2" -H "X_Auth_Subject: admin3"
    -H "x_auth_subject: admin4" -H "X-Auth_Subject: admin5" -H "X_AUTH-SUBJECT: admin6"
    -H "X.Auth.Subject: admin7" -H "X~Auth~Subject: admin8"
    -H "X-Auth-Issuer: https://evil.example" -H "X_Auth_Issuer: https://evil.example"
    -H "x.auth.issuer: https://evil.example"
)

# trf_expect_spoof_dropped SUBJECT_NAME ISSUER_NAME TOKEN: a valid token plus client-sent
# identity headers under these names: the upstream sees authgate's values only.
trf_expect_spoof_dropped() {
    trf_expect_allow "$TRF_MAIN" /api/items "$3" -H "$1: admin" -H "$2: https://evil.example"
}

trf_expect_all_spellings_dropped() {
    trf_expect_allow "$TRF_MAIN" /api/items "$1" "${TRF_SPOOF_HEADERS[@]}"
}

# On the anonymous route authgate's allow has no claim headers: nothing of the client's may
# reach the upstream under any spelling.
trf_expect_anonymous_without_identity() {
    request "http://127.0.0.1:$TRF_MAIN/public/info" "${TRF_SPOOF_HEADERS[@]}"
    expect_eq status 200 "$RESP_STATUS" || return 1
    expect_eq "upstream x-auth-subject" "<absent>" "$(upstream_header x-auth-subject)" &&
        expect_eq "upstream x-auth-issuer" "<absent>" "$(upstream_header x-auth-issuer)" &&
        expect_no_owned_alias
}

# Without the entryPoint's aliasHeadersStrategy, the strip middleware of dynamic.yml alone
# still removes every `_` spelling in any letter case ...
trf_expect_middleware_strips_underscores() {
    request "http://127.0.0.1:$TRF_NOALIAS/api/items" -H "Authorization: Bearer $1" \
        -H "X_Auth_Subject: admin" -H "x_auth_subject: admin2" -H "X_AUTH_SUBJECT: admin3" \
        -H "X-Auth_Subject: admin4" -H "x_auth-subject: admin5" -H "X_Auth_Issuer: https://evil.example" \
        -H "x-auth_ISSUER: https://evil.example"
    expect_eq status 200 "$RESP_STATUS" || return 1
    expect_eq "upstream x-auth-subject" "$IDP_CLIENT" "$(upstream_header x-auth-subject)" || return 1
    if [[ " $(upstream_header_names) " == *_auth* ]]; then
        echo "an underscore spelling reached the upstream: $(upstream_header_names)"
        return 1
    fi
}

# ... but not X.Auth.Subject, which a CGI-style upstream reads as X-Auth-Subject: the reason
# traefik.yml sets aliasHeadersStrategy (the checks above prove that it removes it).
trf_expect_dot_spelling_needs_entrypoint_option() {
    request "http://127.0.0.1:$TRF_NOALIAS/api/items" -H "Authorization: Bearer $1" \
        -H "X.Auth.Subject: admin"
    expect_eq status 200 "$RESP_STATUS" || return 1
    expect_eq "upstream x.auth.subject (Traefik without aliasHeadersStrategy)" admin \
        "$(upstream_header x.auth.subject)"
}

# A client cannot pick the path authgate decides on: its X-Forwarded-Uri (and -Method) are
# replaced by Traefik's own (trustForwardHeader: false, untrusted entryPoint).
trf_expect_forwarded_uri_not_trusted() {
    trf_expect_deny_for missing_token "$TRF_MAIN" /api/items 401 "$TRF_REALM_ONLY" \
        -H "X-Forwarded-Uri: /public/x" -H "X-Forwarded-Method: GET" -H "X-Forwarded-Host: public.example" \
        -H "X-Original-URI: /public/x"
}

# Dot segments are resolved by Traefik before authgate sees the path: /public/../admin/users
# is /admin/users, for authgate as for the upstream.
trf_expect_dot_segments_resolved() {
    trf_expect_deny_for missing_token "$TRF_MAIN" /public/../admin/users 401 "$TRF_REALM_ONLY" --path-as-is ||
        return 1
    trf_expect_deny_for insufficient_scope "$TRF_MAIN" /public/%2e%2e/admin/users 403 \
        '^Bearer realm="authgate", error="insufficient_scope"' --path-as-is -H "Authorization: Bearer $1"
}

# An encoded slash would let /public/..%2Fadmin be under /public for authgate and /admin for an
# upstream that decodes before it normalizes: traefik.yml has Traefik reject it (400), before
# authgate or the upstream see it.
trf_expect_encoded_slash_rejected() {
    local path series before after
    series="authgate_decisions_total{frontend=\"$TRF_FRONTEND\",result=\"allow\",reason=\"anonymous\"}"
    before=$(metric_value "$AG_ADMIN" "$series")
    for path in '/public/..%2Fadmin/users' '/public/..%2fadmin/users' '/public/..%5Cadmin/users' \
        '/public/%252e%252e/admin/users'; do
        request "http://127.0.0.1:$TRF_MAIN$path" --path-as-is
        expect_eq "status of $path" 400 "$RESP_STATUS" || return 1
        [[ $RESP_BODY != *'"headers"'* ]] || { echo "the upstream answered $path"; return 1; }
    done
    after=$(metric_value "$AG_ADMIN" "$series")
    expect_eq "anonymous allows counted by authgate" 0 "$((after - before))"
}

trf_expect_body_to_upstream_only() {
    trf_expect_allow "$TRF_MAIN" /api/items "$1" -X POST --data-binary 'hello' || return 1
    expect_eq "upstream method" POST "$(printf '%s' "$RESP_BODY" | jq -r .method)" &&
        expect_eq "upstream content-length" 5 "$(upstream_header content-length)"
}

# The query token is allowed; the upstream sees the URI as sent (forwardAuth cannot change it:
# token.strip_upstream applies to ext_authz only).
trf_expect_query_allowed() {
    trf_expect_allow "$TRF_QUERY" "/api/items?access_token=$1&x=1" "" || return 1
    expect_eq "upstream path" "/api/items?access_token=$1&x=1" "$(printf '%s' "$RESP_BODY" | jq -r .path)"
}

# Neither Traefik's log (its own and the access log) nor authgate's holds the query token; the
# access log has the request, without its query string.
trf_expect_token_not_logged() {
    local file i
    # The access log line is written once the response has gone: wait for it, bounded.
    for ((i = 0; i < 20; i++)); do
        grep -q '"GET /api/items HTTP/1.1" 200 ' "$E2E_TMP/traefik-query.log" && break
        sleep 0.05
    done
    ((i < 20)) || { echo "no access log line without the query string"; return 1; }
    for file in "$E2E_TMP/traefik-query.log" "$E2E_TMP/authgate-query.log"; do
        if grep -qF "$1" "$file"; then
            echo "the token is in $file"
            return 1
        fi
    done
}

# After `idp_restart --rotate`: see expect_rotation_after (run.sh).
trf_expect_rotation_after() {
    expect_rotation_after trf_expect_allow "$TRF_MAIN" "$1" "$(mint urn:authgate:ps256)" "$2"
}

# During the outage, through the stale instance: authgate's 503 reaches the client as it is,
# with the realm challenge and Retry-After, for every one of 5 requests; never a 200.
trf_expect_outage_denied() {
    local token=$1 i retry before after
    local series="authgate_decisions_total{frontend=\"$TRF_FRONTEND\",result=\"deny\",reason=\"keys_unavailable\"}"
    before=$(metric_value "$AGS_ADMIN" "$series")
    for ((i = 0; i < 5; i++)); do
        request "http://127.0.0.1:$TRF_STALE/api/items" -H "Authorization: Bearer $token"
        expect_eq "status (request $i)" 503 "$RESP_STATUS" || return 1
        retry=$(resp_header retry-after)
        expect_match "Retry-After (request $i)" '^[0-9]+$' "$retry" || return 1
        expect_match "WWW-Authenticate (request $i)" "$TRF_REALM_ONLY" "$(resp_header www-authenticate)" ||
            return 1
        expect_eq "WWW-Authenticate headers (request $i)" 1 "$(resp_header_count www-authenticate)" ||
            return 1
        [[ $RESP_BODY != *'"headers"'* ]] || { echo "the upstream answered"; return 1; }
    done
    after=$(metric_value "$AGS_ADMIN" "$series")
    expect_eq "denials counted as keys_unavailable" 5 "$((after - before))"
}

# authgate unreachable: Traefik answers 500 itself (never the upstream), with a token or without.
trf_expect_unreachable_closed() {
    local args
    for args in "" "Authorization: Bearer $1"; do
        if [[ -n $args ]]; then
            request "http://127.0.0.1:$TRF_DOWN/api/items" -H "$args"
        else
            request "http://127.0.0.1:$TRF_DOWN/public/info"
        fi
        expect_eq status 500 "$RESP_STATUS" || return 1
        [[ $RESP_BODY != *'"headers"'* ]] || { echo "the upstream answered"; return 1; }
    done
}

# trf_expect_bearer_unchanged TOKEN: in front of the Kong instance a bearer request takes the
# app router, whose middleware does not take Authorization from authgate's answer: the upstream
# gets the request's own.
trf_expect_bearer_unchanged() {
    request "http://127.0.0.1:$TRF_KONG/api/items" -H "Authorization: Bearer $1"
    expect_eq status 200 "$RESP_STATUS" &&
        expect_eq "upstream Authorization" "Bearer $1" "$(upstream_header authorization)"
}

# --- run ---------------------------------------------------------------------------------------
trf_ok=1
trf_started=$SECONDS

# Started together, then waited for: their start-up times overlap.
for trf_spec in "main $AG_HTTP $TRF_MAIN" "query $AGQ_HTTP $TRF_QUERY" "stale $AGS_HTTP $TRF_STALE" \
    "noalias $AG_HTTP $TRF_NOALIAS noalias" "down $TRF_NOWHERE $TRF_DOWN" "kong $AGK_HTTP $TRF_KONG"; do
    # shellcheck disable=SC2086 # words on purpose
    set -- $trf_spec
    if ! trf_start "$@" >>"$E2E_TMP/traefik-setup.log" 2>&1; then
        fail "traefik: start in front of authgate $1" "see $E2E_TMP/traefik-setup.log"
        trf_ok=0
    fi
done
set --
for trf_spec in "main $TRF_MAIN 200" "query $TRF_QUERY 200" "stale $TRF_STALE 200" \
    "noalias $TRF_NOALIAS 200" "down $TRF_DOWN 500" "kong $TRF_KONG 200"; do
    # shellcheck disable=SC2086 # three words on purpose
    set -- $trf_spec
    if ((trf_ok)) && ! trf_wait_routed "$@" >>"$E2E_TMP/traefik-setup.log" 2>&1; then
        fail "traefik: $1 routes loaded (/public answers $3)" \
            "see $E2E_TMP/traefik-setup.log and $E2E_TMP/traefik-$1.log"
        trf_ok=0
    fi
done
set --
unset trf_spec
((trf_ok)) && log "traefik: 6 instances routed in $((SECONDS - trf_started))s"

if ((trf_ok)); then
    for trf_alg in RS256 PS256 ES256 EdDSA; do
        trf_lower=${trf_alg,,}
        check "traefik: $trf_alg token is allowed; the upstream gets X-Auth-Subject and X-Auth-Issuer" \
            trf_expect_alg "$(mint "urn:authgate:$trf_lower")" "$trf_alg"
    done
    unset trf_alg trf_lower

    trf_token=$(mint urn:authgate:rs256)
    check "traefik: no token is 401 with WWW-Authenticate: Bearer realm=\"authgate\"" \
        trf_expect_deny_for missing_token "$TRF_MAIN" /api/items 401 "$TRF_REALM_ONLY"
    check "traefik: tampered token is 401 invalid_token" \
        trf_expect_deny_for bad_signature "$TRF_MAIN" /api/items 401 "$TRF_INVALID_TOKEN" \
        -H "Authorization: Bearer $(tamper "$trf_token")"
    check "traefik: expired token is 401 invalid_token" trf_expect_expired
    check "traefik: token for another audience (urn:other) is 401 invalid_token" \
        trf_expect_deny_for wrong_audience "$TRF_MAIN" /api/items 401 "$TRF_INVALID_TOKEN" \
        -H "Authorization: Bearer $(mint urn:other)"
    check "traefik: empty Bearer is 400 invalid_request" \
        trf_expect_deny_for empty_token "$TRF_MAIN" /api/items 400 "$TRF_INVALID_REQUEST" \
        -H "Authorization: Bearer "
    check "traefik: two Authorization headers reach authgate and are 400 invalid_request" \
        trf_expect_deny_for multiple_tokens "$TRF_MAIN" /api/items 400 "$TRF_INVALID_REQUEST" \
        -H "Authorization: Bearer $trf_token" -H "Authorization: Bearer $trf_token"
    check "traefik: missing scope is 403 with the insufficient_scope challenge" \
        trf_expect_deny_for insufficient_scope "$TRF_MAIN" /admin/users 403 \
        '^Bearer realm="authgate", error="insufficient_scope", .*scope="api:admin"' \
        -H "Authorization: Bearer $trf_token"
    check "traefik: route with action deny is 403 without a challenge" \
        trf_expect_deny_for route_denied "$TRF_MAIN" /denied/x 403 "" -H "Authorization: Bearer $trf_token"
    check "traefik: request body goes to the upstream (not to authgate)" \
        trf_expect_body_to_upstream_only "$trf_token"

    check "traefik: client-sent X-Forwarded-Uri: /public does not open a protected path" \
        trf_expect_forwarded_uri_not_trusted
    check "traefik: dot segments (/public/../admin, %2e%2e) are resolved before authgate decides" \
        trf_expect_dot_segments_resolved "$trf_token"
    check "traefik: encoded slash, backslash or percent in the path is 400 (no split view of /public)" \
        trf_expect_encoded_slash_rejected

    for trf_names in "X-Auth-Subject X-Auth-Issuer" "x-auth-subject x-auth-issuer" \
        "X_Auth_Subject X_Auth_Issuer" "x_auth_subject x_auth_issuer" "X-Auth_Subject X_Auth-Issuer" \
        "X.Auth.Subject X.Auth.Issuer" "X~Auth~Subject X+Auth+Issuer"; do
        # shellcheck disable=SC2086 # two words on purpose
        check "traefik: client-sent ${trf_names% *} never reaches the upstream as identity" \
            trf_expect_spoof_dropped $trf_names "$trf_token"
    done
    unset trf_names
    check "traefik: all spellings of X-Auth-* sent at once: the upstream sees authgate's values only" \
        trf_expect_all_spellings_dropped "$trf_token"
    check "traefik: client-sent X-Auth-* (every spelling) on an anonymous route do not reach the upstream" \
        trf_expect_anonymous_without_identity
    check "traefik: without aliasHeadersStrategy, the strip middleware alone removes every _ spelling" \
        trf_expect_middleware_strips_underscores "$trf_token"
    check "traefik: without aliasHeadersStrategy, X.Auth.Subject reaches the upstream (why it is set)" \
        trf_expect_dot_spelling_needs_entrypoint_option "$trf_token"

    check "traefik: ?access_token= is allowed where the query source is enabled" \
        trf_expect_query_allowed "$trf_token"
    check "traefik: the query token is in no log (Traefik log and access log, authgate)" \
        trf_expect_token_not_logged "${trf_token##*.}"
    check "traefik: ?access_token= is ignored where the query source is off (401, no token)" \
        trf_expect_deny_for missing_token "$TRF_MAIN" "/api/items?access_token=$trf_token" 401 "$TRF_REALM_ONLY"
    check "traefik: header and query token together are 400 invalid_request" \
        trf_expect_deny_for multiple_tokens "$TRF_QUERY" "/api/items?access_token=$trf_token" 400 \
        "$TRF_INVALID_REQUEST" -H "Authorization: Bearer $trf_token"
    check "traefik: authgate unreachable is 500 from Traefik, never the upstream" \
        trf_expect_unreachable_closed "$trf_token"

    check "traefik: curl --user john:doe reaches the upstream as Bearer <john's token> (private_key_jwt at the IdP); a wrong password is 401 Basic+Bearer twice for one exchange" \
        expect_password_flow "http://127.0.0.1:$TRF_KONG" traefik
    check "traefik: a token in a cookie or in X-Api-Token (authRequestHeaders) reaches the upstream as its subject" \
        expect_token_sources "http://127.0.0.1:$TRF_KONG"
    check "traefik: an opaque token is introspected and reaches the upstream with X-Auth-Issuer (no sub: no X-Auth-Subject); the second request is a cache hit" \
        expect_opaque_token "http://127.0.0.1:$TRF_KONG"
    check "traefik: an opaque token revoked at the IdP is 401 invalid_token once cache_ttl (2 s) has passed" \
        expect_revoked_opaque "http://127.0.0.1:$TRF_KONG"
    check "traefik: a DPoP-bound token with a proof for the URL called passes (DPoP in authRequestHeaders); as Bearer, a replayed proof, a proof for another path or for https are 401" \
        expect_dpop_token "http://127.0.0.1:$TRF_KONG"
    check "traefik: /.well-known/oauth-protected-resource is authgate's metadata (its own router, no forwardAuth); a 401 names it in resource_metadata" \
        expect_resource_metadata "http://127.0.0.1:$TRF_KONG"
    check "traefik: with the password method on, a bearer token reaches the upstream unchanged" \
        trf_expect_bearer_unchanged "$trf_token"

    # Not through check: the IdP restart must happen in this shell (its PID is tracked here).
    trf_before_rotation=$(mint urn:authgate:ps256)
    trf_authgate_pid=$(pid_of authgate-main)
    if idp_restart --rotate; then
        check "traefik: key rotation at the IdP is picked up without restarting authgate" \
            trf_expect_rotation_after "$trf_before_rotation" "$trf_authgate_pid"
    else
        fail "traefik: key rotation at the IdP is picked up without restarting authgate" \
            "the IdP did not come back; see $E2E_TMP/idp.log"
    fi

    trf_token=$(mint urn:authgate:eddsa)
    check "traefik: the stale instance allows while the IdP is up" \
        trf_expect_allow "$TRF_STALE" /api/items "$trf_token"
    if idp_outage_begin; then
        check "traefik: IdP down and keys past max_stale: 503 with Retry-After at the client (never 200)" \
            trf_expect_outage_denied "$trf_token"
        check "traefik: IdP down within max_stale: still allowed" \
            trf_expect_allow "$TRF_MAIN" /api/items "$trf_token"
    else
        fail "traefik: IdP down and keys past max_stale: 503 with Retry-After at the client (never 200)" \
            "the stale instance stayed ready after the IdP stopped"
    fi
    idp_outage_end || fail "traefik: IdP back after the outage" "see $E2E_TMP/idp.log"
    unset trf_token trf_before_rotation trf_authgate_pid
fi

# Stopped here, not at the end of the run: TERM to all first, so their graceful stops overlap.
for trf_name in main query stale noalias down kong; do
    trf_pid=$(pid_of "traefik-$trf_name")
    [[ -n $trf_pid ]] && kill -TERM "$trf_pid" 2>/dev/null
done
for trf_name in main query stale noalias down kong; do
    stop_one "traefik-$trf_name" 5
done
log "traefik: section done in $((SECONDS - trf_started))s"
unset trf_ok trf_name trf_pid trf_started
