# shellcheck shell=bash
# The nginx section of the e2e suite, sourced by run.sh (see there for what it provides).
#
# Runs deploy/nginx/nginx.conf, templated only for its ports and the test PKI's files, four
# times: in front of the main authgate instance, the query-token one, the short-max_stale one
# and the Kong parity one (whose TLS listener is used: client certificates). Each nginx has its
# own prefix, error log and pid file under $E2E_TMP and runs in the foreground (daemon off).

# nginx_start NAME AUTHGATE_HTTP_PORT LISTEN_PORT [TLS_PORT]: the TLS listener (the test PKI's
# server certificate) on TLS_PORT, or on a free port nobody uses.
nginx_start() {
    local name=$1 authgate_port=$2 listen=$3 tls=${4:-$(free_port)} dir="$E2E_TMP/nginx-$1"
    mkdir -p "$dir"
    sed -e "s/__LISTEN__/$listen/g" -e "s/__LISTEN_TLS__/$tls/g" \
        -e "s|__TLS_CERT__|$PKI/server.pem|g" -e "s|__TLS_KEY__|$PKI/server.key|g" \
        -e "s/__AUTHGATE_HTTP__/$authgate_port/g" \
        -e "s/__UPSTREAM__/$UPSTREAM_PORT/g" "$REPO_ROOT/deploy/nginx/nginx.conf" >"$dir/nginx.conf"
    if grep -q '__[A-Z_]*__' "$dir/nginx.conf"; then
        echo "a placeholder is left in $dir/nginx.conf"
        return 1
    fi
    "$NGINX_BIN" -t -q -p "$dir/" -c nginx.conf -e "$dir/error.log" -g "pid $dir/nginx.pid;" ||
        return 1
    start_bg "nginx-$name" "$NGINX_BIN" -p "$dir/" -c nginx.conf -e "$dir/error.log" \
        -g "daemon off; pid $dir/nginx.pid;"
    # /public is an anonymous route: 200 once nginx, authgate and the upstream all answer.
    wait_http "http://127.0.0.1:$listen/public" 200 10
}

NGX_MAIN=$(free_port)
NGX_QUERY=$(free_port)
NGX_STALE=$(free_port)
NGX_KONG=$(free_port)
NGX_KONG_TLS=$(free_port)

# --- checks (each runs in a subshell through `check`; stdout is the failure detail) -----------

# ngx_expect_allow PORT PATH TOKEN [CURL_ARGS...]: 200 from the upstream, which saw the IdP's
# client as X-Auth-Subject and the issuer as X-Auth-Issuer, once each, and no other spelling
# of either.
ngx_expect_allow() {
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

# ngx_expect_deny PORT PATH STATUS CHALLENGE_REGEX [CURL_ARGS...]: expect_denied through nginx.
ngx_expect_deny() {
    local port=$1 path=$2
    shift 2
    expect_denied "http://127.0.0.1:$port$path" "$@"
}

# ngx_expect_deny_for REASON PORT PATH STATUS CHALLENGE_REGEX [CURL_ARGS...]: as
# ngx_expect_deny, and authgate counted exactly one nginx denial with REASON for it.
ngx_expect_deny_for() {
    local reason=$1 admin
    shift
    case $1 in
    "$NGX_MAIN") admin=$AG_ADMIN ;;
    "$NGX_QUERY") admin=$AGQ_ADMIN ;;
    *) admin=$AGS_ADMIN ;;
    esac
    expect_counted "$admin" nginx "$reason" ngx_expect_deny "$@"
}

NGX_REALM_ONLY='^Bearer realm="authgate"$'
NGX_INVALID_TOKEN='^Bearer realm="authgate", error="invalid_token"'

ngx_expect_alg() {
    expect_eq "alg of the IdP's token" "$2" "$(jwt_header "$1" alg)" &&
        ngx_expect_allow "$NGX_MAIN" /api/items?page=1 "$1"
}

# ngx_expect_spoof_dropped SUBJECT_NAME ISSUER_NAME TOKEN: a valid token plus client-sent
# identity headers under these names: the upstream sees authgate's values only.
ngx_expect_spoof_dropped() {
    ngx_expect_allow "$NGX_MAIN" /api/items "$3" -H "$1: admin" -H "$2: https://evil.example"
}

ngx_expect_anonymous_without_identity() {
    request "http://127.0.0.1:$NGX_MAIN/public/info" \
        -H "X-Auth-Subject: admin" -H "X_Auth_Subject: admin" -H "x-auth-issuer: https://evil.example"
    expect_eq status 200 "$RESP_STATUS" || return 1
    expect_eq "upstream x-auth-subject" "<absent>" "$(upstream_header x-auth-subject)" &&
        expect_eq "upstream x-auth-issuer" "<absent>" "$(upstream_header x-auth-issuer)" &&
        expect_no_owned_alias
}

# A client cannot pick the URI authgate decides on: nginx sets X-Original-URI from its own
# $request_uri over whatever the client sent.
ngx_expect_original_uri_not_trusted() {
    ngx_expect_deny_for missing_token "$NGX_MAIN" /api/items 401 "$NGX_REALM_ONLY" \
        -H "X-Original-URI: /public/x" -H "X-Forwarded-Uri: /public/x"
}

# $request_uri is the raw URI: authgate resolves the dot segments itself (the deny rule on
# /denied applies, not the anonymous /public), and refuses an encoded slash outright (400, which
# the nginx profile answers as 401 invalid_request).
ngx_expect_raw_uri_canonicalised() {
    ngx_expect_deny_for route_denied "$NGX_MAIN" /public/../denied/x 403 "" --path-as-is || return 1
    ngx_expect_deny_for ambiguous_path "$NGX_MAIN" /public/..%2fdenied/x 401 \
        '^Bearer realm="authgate", error="invalid_request"' --path-as-is
}

ngx_expect_body_to_upstream_only() {
    ngx_expect_allow "$NGX_MAIN" /api/items "$1" -X POST --data-binary 'hello' || return 1
    expect_eq "upstream method" POST "$(printf '%s' "$RESP_BODY" | jq -r .method)" &&
        expect_eq "upstream content-length" 5 "$(upstream_header content-length)"
}

# The query token is allowed; the upstream sees the URI as sent (auth_request cannot strip it).
ngx_expect_query_allowed() {
    ngx_expect_allow "$NGX_QUERY" "/api/items?access_token=$1&x=1" "" || return 1
    expect_eq "upstream path" "/api/items?access_token=$1&x=1" "$(printf '%s' "$RESP_BODY" | jq -r .path)"
}

# Neither nginx's access log nor authgate's log holds the query token.
ngx_expect_token_not_logged() {
    local file
    for file in "$E2E_TMP/nginx-query.log" "$E2E_TMP/nginx-query/error.log" "$E2E_TMP/authgate-query.log"; do
        if grep -qF "$1" "$file"; then
            echo "the token is in $file"
            return 1
        fi
    done
    grep -q 'GET /api/items ' "$E2E_TMP/nginx-query.log" || { echo "no access log line"; return 1; }
}

ngx_expect_expired() {
    local token exp
    token=$(mint_expired)
    exp=$(jwt_claim "$token" exp)
    if ! [[ $exp =~ ^[0-9]+$ ]] || ((exp >= $(date +%s))); then
        echo "the short-lived token is not expired (exp=$exp, now=$(date +%s))"
        return 1
    fi
    ngx_expect_deny_for expired "$NGX_MAIN" /api/items 401 "$NGX_INVALID_TOKEN" -H "Authorization: Bearer $token"
}

# After `idp_restart --rotate`: see expect_rotation_after (run.sh).
ngx_expect_rotation_after() {
    expect_rotation_after ngx_expect_allow "$NGX_MAIN" "$1" "$(mint urn:authgate:rs256)" "$2"
}

# During the outage, through the stale instance: 401, the realm challenge and Retry-After, for
# every one of 5 requests; never a 200, never a 5xx.
ngx_expect_outage_denied() {
    local token=$1 i retry before after
    local series='authgate_decisions_total{frontend="nginx",result="deny",reason="keys_unavailable"}'
    before=$(metric_value "$AGS_ADMIN" "$series")
    for ((i = 0; i < 5; i++)); do
        request "http://127.0.0.1:$NGX_STALE/api/items" -H "Authorization: Bearer $token"
        expect_eq "status (request $i)" 401 "$RESP_STATUS" || return 1
        retry=$(resp_header retry-after)
        expect_match "Retry-After (request $i)" '^[0-9]+$' "$retry" || return 1
        expect_match "WWW-Authenticate (request $i)" "$NGX_REALM_ONLY" "$(resp_header www-authenticate)" ||
            return 1
        [[ $RESP_BODY != *'"headers"'* ]] || { echo "the upstream answered"; return 1; }
    done
    after=$(metric_value "$AGS_ADMIN" "$series")
    expect_eq "denials counted as keys_unavailable" 5 "$((after - before))"
}

# ngx_expect_bearer_unchanged TOKEN: through the Kong instance's nginx a bearer request's own
# Authorization reaches the upstream as it was (the map falls back to it: authgate answers
# Authorization only for an exchanged token).
ngx_expect_bearer_unchanged() {
    request "http://127.0.0.1:$NGX_KONG/api/items" -H "Authorization: Bearer $1"
    expect_eq status 200 "$RESP_STATUS" &&
        expect_eq "upstream Authorization" "Bearer $1" "$(upstream_header authorization)"
}

# ngx_expect_password_not_logged: after expect_password_flow, neither the passwords nor the
# exchanged token appear in the logs of nginx, the kong authgate instance or the IdP.
ngx_expect_password_not_logged() {
    local token file secret
    request "http://127.0.0.1:$NGX_KONG/api/items" --user john:doe
    expect_eq status 200 "$RESP_STATUS" || return 1
    token=$(upstream_header authorization)
    token=${token#Bearer }
    for file in "$E2E_TMP/nginx-kong.log" "$E2E_TMP/nginx-kong/error.log" \
        "$E2E_TMP/authgate-kong.log" "$E2E_TMP/idp.log"; do
        for secret in wrong-nginx "${token##*.}" "$(printf 'john:doe' | base64)"; do
            if grep -qF -- "$secret" "$file"; then
                echo "${secret:0:12}... is in $file"
                return 1
            fi
        done
    done
    grep -q 'invalid_credentials' "$E2E_TMP/authgate-kong.log" ||
        { echo "no denial logged by the kong instance (is it logging?)"; return 1; }
}

# ngx_expect_cert_header_not_believed: on plain HTTP a client-sent X-Forwarded-Tls-Client-Cert
# naming certificate A is replaced by nginx's (empty) $ssl_client_escaped_cert, so A's bound
# token is refused.
ngx_expect_cert_header_not_believed() {
    local token
    token=$(mint_bound "$PKI/client-a.pem")
    request "http://127.0.0.1:$NGX_KONG/api/items" -H "Authorization: Bearer $token" \
        -H "X-Forwarded-Tls-Client-Cert: $(jq -sRr @uri <"$PKI/client-a.pem")"
    expect_eq status 401 "$RESP_STATUS" &&
        expect_match WWW-Authenticate 'error="invalid_token"' "$(resp_header www-authenticate)"
}

# ngx_expect_reload_under_load TOKEN: authgate main reloads its file (a new deny rule for
# /reload-check) while a load of valid requests goes through nginx: the rule applies within
# seconds and not one of the requests fails. The file is put back afterwards.
ngx_expect_reload_under_load() {
    local token=$1 file="$E2E_TMP/authgate-main.yaml" results="$E2E_TMP/reload-load.txt" i
    local started applied failed total
    : >"$results"
    (
        for ((i = 0; i < 400; i++)); do
            curl -s -o /dev/null -w '%{http_code}\n' --max-time 5 \
                -H "Authorization: Bearer $token" "http://127.0.0.1:$NGX_MAIN/api/items" >>"$results"
        done
    ) &
    local loader=$!
    cp "$file" "$file.orig"
    started=$(date +%s%N)
    # Written as editors do: a new file renamed into place.
    sed '/^routes:$/a\  - {path_prefix: /reload-check, action: deny}' "$file.orig" >"$file.new"
    mv "$file.new" "$file"
    applied=""
    for ((i = 0; i < 100; i++)); do
        request "http://127.0.0.1:$NGX_MAIN/reload-check" -H "Authorization: Bearer $token"
        if [[ $RESP_STATUS == 403 ]]; then
            applied=$(( ($(date +%s%N) - started) / 1000000 ))
            break
        fi
        sleep 0.05
    done
    wait "$loader"
    mv "$file.orig" "$file"
    [[ -n $applied ]] || { echo "the new rule never applied"; return 1; }
    printf '%s\n' "$applied" >"$E2E_TMP/reload-applied-ms"
    total=$(wc -l <"$results")
    failed=$(grep -vc '^200$' "$results")
    expect_eq "requests during the reload" 400 "$total" &&
        expect_eq "failed requests during the reload" 0 "$failed"
}

# --- run ---------------------------------------------------------------------------------------
ngx_ok=1

for ngx_spec in "main $AG_HTTP $NGX_MAIN" "query $AGQ_HTTP $NGX_QUERY" "stale $AGS_HTTP $NGX_STALE" \
    "kong $AGK_HTTP $NGX_KONG $NGX_KONG_TLS"; do
    # shellcheck disable=SC2086 # three or four words on purpose
    set -- $ngx_spec
    if ! nginx_start "$@" >>"$E2E_TMP/nginx-setup.log" 2>&1; then
        fail "nginx: start in front of authgate $1" "see $E2E_TMP/nginx-setup.log and $E2E_TMP/nginx-$1/error.log"
        ngx_ok=0
    fi
done
set --
unset ngx_spec

if ((ngx_ok)); then
    for ngx_alg in RS256 PS256 ES256 EdDSA; do
        ngx_lower=${ngx_alg,,}
        check "nginx: $ngx_alg token is allowed; the upstream gets X-Auth-Subject and X-Auth-Issuer" \
            ngx_expect_alg "$(mint "urn:authgate:$ngx_lower")" "$ngx_alg"
    done
    unset ngx_alg ngx_lower

    ngx_token=$(mint urn:authgate:rs256)
    check "nginx: no token is 401 with WWW-Authenticate: Bearer realm=\"authgate\"" \
        ngx_expect_deny_for missing_token "$NGX_MAIN" /api/items 401 "$NGX_REALM_ONLY"
    check "nginx: tampered token is 401 invalid_token" \
        ngx_expect_deny_for bad_signature "$NGX_MAIN" /api/items 401 "$NGX_INVALID_TOKEN" \
        -H "Authorization: Bearer $(tamper "$ngx_token")"
    check "nginx: expired token is 401 invalid_token" ngx_expect_expired
    check "nginx: token for another audience (urn:other) is 401 invalid_token" \
        ngx_expect_deny_for wrong_audience "$NGX_MAIN" /api/items 401 "$NGX_INVALID_TOKEN" \
        -H "Authorization: Bearer $(mint urn:other)"
    check "nginx: empty Bearer is 401 invalid_request (nginx profile: no 400)" \
        ngx_expect_deny_for empty_token "$NGX_MAIN" /api/items 401 '^Bearer realm="authgate", error="invalid_request"' \
        -H "Authorization: Bearer "
    check "nginx: missing scope is 403 with the insufficient_scope challenge" \
        ngx_expect_deny_for insufficient_scope "$NGX_MAIN" /admin/users 403 \
        '^Bearer realm="authgate", error="insufficient_scope", .*scope="api:admin"' \
        -H "Authorization: Bearer $ngx_token"
    check "nginx: route with action deny is 403 without a challenge" \
        ngx_expect_deny_for route_denied "$NGX_MAIN" /denied/x 403 "" -H "Authorization: Bearer $ngx_token"
    check "nginx: request body goes to the upstream (not to authgate)" \
        ngx_expect_body_to_upstream_only "$ngx_token"
    check "nginx: client-sent X-Original-URI: /public does not open a protected path" \
        ngx_expect_original_uri_not_trusted
    check "nginx: /public/../denied is denied by the /denied rule; an encoded slash is refused" \
        ngx_expect_raw_uri_canonicalised

    for ngx_names in "X-Auth-Subject X-Auth-Issuer" "x-auth-subject x-auth-issuer" \
        "X_Auth_Subject X_Auth_Issuer" "X.Auth.Subject X.Auth.Issuer"; do
        # shellcheck disable=SC2086 # two words on purpose
        check "nginx: client-sent ${ngx_names% *} never reaches the upstream as identity" \
            ngx_expect_spoof_dropped $ngx_names "$ngx_token"
    done
    unset ngx_names
    check "nginx: client-sent X-Auth-Subject on an anonymous route does not reach the upstream" \
        ngx_expect_anonymous_without_identity

    check "nginx: ?access_token= is allowed where the query source is enabled" \
        ngx_expect_query_allowed "$ngx_token"
    check "nginx: the query token is in no log (nginx access and error log, authgate)" \
        ngx_expect_token_not_logged "${ngx_token##*.}"
    check "nginx: ?access_token= is ignored where the query source is off (401, no token)" \
        ngx_expect_deny_for missing_token "$NGX_MAIN" "/api/items?access_token=$ngx_token" 401 "$NGX_REALM_ONLY"
    check "nginx: header and query token together are 401 invalid_request" \
        ngx_expect_deny_for multiple_tokens "$NGX_QUERY" "/api/items?access_token=$ngx_token" 401 \
        '^Bearer realm="authgate", error="invalid_request"' -H "Authorization: Bearer $ngx_token"

    check "nginx: curl --user john:doe reaches the upstream as Bearer <john's token> (private_key_jwt at the IdP); a wrong password is 401 Basic+Bearer twice for one exchange" \
        expect_password_flow "http://127.0.0.1:$NGX_KONG" nginx
    check "nginx: passwords and the exchanged token are in no log (nginx, authgate, IdP)" \
        ngx_expect_password_not_logged
    check "nginx: a token in a cookie or in X-Api-Token (token sources) reaches the upstream as its subject" \
        expect_token_sources "http://127.0.0.1:$NGX_KONG"
    check "nginx: an opaque token is introspected and reaches the upstream with X-Auth-Issuer (no sub: no X-Auth-Subject); the second request is a cache hit" \
        expect_opaque_token "http://127.0.0.1:$NGX_KONG"
    check "nginx: an opaque token revoked at the IdP is 401 invalid_token once cache_ttl (2 s) has passed" \
        expect_revoked_opaque "http://127.0.0.1:$NGX_KONG"
    check "nginx: a DPoP-bound token with a proof for the URL called passes; as Bearer, a replayed proof, a proof for another path or for https are 401" \
        expect_dpop_token "http://127.0.0.1:$NGX_KONG"
    check "nginx: over TLS a DPoP proof names https:// (X-Forwarded-Proto \$scheme); one for http:// is 401" \
        expect_dpop_tls "https://127.0.0.1:$NGX_KONG_TLS/api/items" --cacert "$PKI/ca.pem"
    check "nginx: /.well-known/oauth-protected-resource is authgate's metadata (no auth); a 401 names it in resource_metadata" \
        expect_resource_metadata "http://127.0.0.1:$NGX_KONG"
    check "nginx: with the password method on, a bearer token reaches the upstream unchanged" \
        ngx_expect_bearer_unchanged "$ngx_token"
    check "nginx: a certificate-bound token passes over TLS with its client certificate only" \
        expect_bound_token "https://127.0.0.1:$NGX_KONG_TLS/api/items" --cacert "$PKI/ca.pem"
    check "nginx: a client-sent X-Forwarded-Tls-Client-Cert on plain HTTP is not believed" \
        ngx_expect_cert_header_not_believed

    check "nginx: authgate reloads its config under load (a new rule applies, no request fails)" \
        ngx_expect_reload_under_load "$ngx_token"
    [[ -s $E2E_TMP/reload-applied-ms ]] &&
        log "nginx: the reload applied $(<"$E2E_TMP/reload-applied-ms") ms after the file was written"

    # Not through check: the IdP restart must happen in this shell (its PID is tracked here).
    ngx_before_rotation=$ngx_token
    ngx_authgate_pid=$(pid_of authgate-main)
    if idp_restart --rotate; then
        check "nginx: key rotation at the IdP is picked up without restarting authgate" \
            ngx_expect_rotation_after "$ngx_before_rotation" "$ngx_authgate_pid"
    else
        fail "nginx: key rotation at the IdP is picked up without restarting authgate" \
            "the IdP did not come back; see $E2E_TMP/idp.log"
    fi

    ngx_token=$(mint urn:authgate:es256)
    check "nginx: the stale instance allows while the IdP is up" \
        ngx_expect_allow "$NGX_STALE" /api/items "$ngx_token"
    if idp_outage_begin; then
        check "nginx: IdP down and keys past max_stale: 401 with Retry-After (never 200 or 5xx)" \
            ngx_expect_outage_denied "$ngx_token"
        check "nginx: IdP down within max_stale: still allowed" \
            ngx_expect_allow "$NGX_MAIN" /api/items "$ngx_token"
    else
        fail "nginx: IdP down and keys past max_stale: 401 with Retry-After (never 200 or 5xx)" \
            "the stale instance stayed ready after the IdP stopped"
    fi
    idp_outage_end || fail "nginx: IdP back after the outage" "see $E2E_TMP/idp.log"
    unset ngx_token ngx_before_rotation ngx_authgate_pid
fi
unset ngx_ok
