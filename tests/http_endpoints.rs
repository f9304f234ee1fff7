//! The response table of DESIGN.md over real HTTP, for the three forward-auth mouths: `/auth`
//! (Traefik ForwardAuth), `/auth/nginx` (nginx auth_request) and `/envoy/...` (Envoy ext_authz
//! HTTP mode).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::app::App;
use common::idp::TestIdp;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A forward-auth mouth and how a proxy tells it about the original request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mouth {
    /// Traefik: `X-Forwarded-*` headers on `GET /auth`.
    Traefik,
    /// nginx: `X-Original-URI`/`X-Original-Method` on `GET /auth/nginx`.
    Nginx,
    /// Envoy HTTP mode: the original method and path behind `/envoy`.
    Envoy,
}

const MOUTHS: [Mouth; 3] = [Mouth::Traefik, Mouth::Nginx, Mouth::Envoy];

/// A started IdP and authgate trusting it; `extra` is appended to the YAML.
async fn start(extra: &str) -> (TestIdp, App) {
    App::with_idp(extra).await
}

/// A check of the original request `GET {uri}` (path and query) through `mouth`.
fn request(app: &App, mouth: Mouth, uri: &str) -> reqwest::RequestBuilder {
    match mouth {
        Mouth::Traefik => app
            .client
            .get(app.url("/auth"))
            .header("X-Forwarded-Method", "GET")
            .header("X-Forwarded-Proto", "https")
            .header("X-Forwarded-Host", "api.example.com")
            .header("X-Forwarded-Uri", uri),
        Mouth::Nginx => app
            .client
            .get(app.url("/auth/nginx"))
            .header("X-Original-Method", "GET")
            .header("X-Original-URI", uri),
        Mouth::Envoy => app.client.get(app.url(&format!("/envoy{uri}"))),
    }
}

async fn ask(app: &App, mouth: Mouth, uri: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = request(app, mouth, uri);
    if let Some(token) = token {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    req.send().await.expect("check request")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

fn challenge(response: &reqwest::Response) -> &str {
    header(response, "www-authenticate").unwrap_or_default()
}

/// A deny must never hand the upstream an identity.
fn assert_no_claim_headers(response: &reqwest::Response, context: &str) {
    for name in ["x-auth-subject", "x-auth-issuer"] {
        assert!(
            response.headers().get(name).is_none(),
            "{context}: deny carries {name}"
        );
    }
}

/// Asserts a 401 with an `invalid_token` challenge and no claim headers.
fn assert_invalid_token(response: &reqwest::Response, context: &str) {
    assert_eq!(response.status(), 401, "{context}");
    assert!(
        challenge(response).contains(r#"error="invalid_token""#),
        "{context}: {}",
        challenge(response)
    );
    assert_no_claim_headers(response, context);
}

#[tokio::test]
async fn a_valid_token_is_allowed_with_subject_and_issuer_headers_on_every_mouth() {
    let (idp, app) = start("").await;
    let token = idp.mint(idp.valid_claims("alice"));
    for mouth in MOUTHS {
        let response = ask(&app, mouth, "/items", Some(&token)).await;
        assert_eq!(response.status(), 200, "{mouth:?}");
        assert_eq!(
            header(&response, "x-auth-subject"),
            Some("alice"),
            "{mouth:?}"
        );
        assert_eq!(
            header(&response, "x-auth-issuer"),
            Some(idp.issuer().as_str()),
            "{mouth:?}"
        );
        assert!(header(&response, "www-authenticate").is_none(), "{mouth:?}");
    }
}

#[tokio::test]
async fn a_check_without_a_token_gets_a_bare_bearer_challenge_on_every_mouth() {
    let (_idp, app) = start("").await;
    for mouth in MOUTHS {
        let response = ask(&app, mouth, "/items", None).await;
        assert_eq!(response.status(), 401, "{mouth:?}");
        assert_eq!(
            challenge(&response),
            r#"Bearer realm="authgate""#,
            "{mouth:?}"
        );
        assert_no_claim_headers(&response, &format!("{mouth:?}"));
    }
}

#[tokio::test]
async fn a_tampered_token_is_denied_as_invalid_token_on_every_mouth() {
    let (idp, app) = start("").await;
    let token = idp.mint(idp.valid_claims("alice"));
    // Same header and signature, a payload that now speaks for someone else.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&idp.valid_claims("admin")).unwrap());
    let tampered = parts.join(".");
    assert_ne!(tampered, token);
    for mouth in MOUTHS {
        let response = ask(&app, mouth, "/items", Some(&tampered)).await;
        assert_invalid_token(&response, &format!("{mouth:?}"));
    }
    assert_eq!(
        ask(&app, Mouth::Traefik, "/items", Some(&token))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn an_expired_token_is_denied_as_invalid_token() {
    let (idp, app) = start("").await;
    let mut claims = idp.valid_claims("alice");
    let now = claims["iat"].as_i64().unwrap();
    // Past the default 30 s leeway.
    claims["exp"] = json!(now - 120);
    claims["iat"] = json!(now - 600);
    claims["nbf"] = json!(now - 600);
    let token = idp.mint(claims);
    for mouth in MOUTHS {
        let response = ask(&app, mouth, "/items", Some(&token)).await;
        assert_invalid_token(&response, &format!("{mouth:?}"));
    }
}

#[tokio::test]
async fn a_token_for_another_audience_is_denied_as_invalid_token() {
    let (idp, app) = start("").await;
    let mut claims = idp.valid_claims("alice");
    claims["aud"] = json!(["some-other-api"]);
    let token = idp.mint(claims);
    for mouth in MOUTHS {
        let response = ask(&app, mouth, "/items", Some(&token)).await;
        assert_invalid_token(&response, &format!("{mouth:?}"));
    }
}

#[tokio::test]
async fn two_authorization_headers_are_a_bad_request_except_on_nginx_where_they_are_a_401() {
    let (idp, app) = start("").await;
    let token = idp.mint(idp.valid_claims("alice"));
    for mouth in MOUTHS {
        // reqwest appends: two Authorization header lines reach authgate.
        let response = request(&app, mouth, "/items")
            .header("Authorization", format!("Bearer {token}"))
            .header("Authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        let expected = if mouth == Mouth::Nginx { 401 } else { 400 };
        assert_eq!(response.status(), expected, "{mouth:?}");
        assert!(
            challenge(&response).contains(r#"error="invalid_request""#),
            "{mouth:?}: {}",
            challenge(&response)
        );
        assert_no_claim_headers(&response, &format!("{mouth:?}"));
    }
}

#[tokio::test]
async fn a_token_without_a_required_scope_is_forbidden_with_insufficient_scope() {
    let (idp, app) = start("routes: [{path_prefix: /admin, require: {scopes: [admin]}}]").await;
    let mut claims = idp.valid_claims("alice");
    claims["scope"] = json!("read write");
    let reader = idp.mint(claims.clone());
    claims["scope"] = json!("read admin");
    let admin = idp.mint(claims);
    for mouth in MOUTHS {
        let response = ask(&app, mouth, "/admin/users", Some(&reader)).await;
        assert_eq!(response.status(), 403, "{mouth:?}");
        assert!(
            challenge(&response).contains(r#"error="insufficient_scope""#),
            "{mouth:?}: {}",
            challenge(&response)
        );
        assert!(
            challenge(&response).contains(r#"scope="admin""#),
            "{mouth:?}"
        );
        // The token was valid and its claims known: still no identity on a deny.
        assert_no_claim_headers(&response, &format!("{mouth:?}"));

        let response = ask(&app, mouth, "/items", Some(&reader)).await;
        assert_eq!(
            response.status(),
            200,
            "{mouth:?}: no scope needed outside /admin"
        );
        let response = ask(&app, mouth, "/admin/users", Some(&admin)).await;
        assert_eq!(response.status(), 200, "{mouth:?}: admin scope granted");
        assert_eq!(header(&response, "x-auth-subject"), Some("alice"));
    }
}

#[tokio::test]
async fn a_deny_never_carries_claim_headers_even_ones_the_client_sent() {
    let (idp, app) = start("routes: [{path_prefix: /blocked, action: deny}]").await;
    let token = idp.mint(idp.valid_claims("alice"));
    let expired = {
        let mut claims = idp.valid_claims("alice");
        claims["exp"] = json!(0);
        idp.mint(claims)
    };
    for mouth in MOUTHS {
        for (uri, token) in [
            ("/items", None),
            ("/items", Some(expired.as_str())),
            ("/items", Some("not.a.jwt")),
            ("/blocked", Some(token.as_str())),
        ] {
            let mut req = request(&app, mouth, uri)
                .header("X-Auth-Subject", "admin")
                .header("X-Auth-Issuer", idp.issuer());
            if let Some(token) = token {
                req = req.header("Authorization", format!("Bearer {token}"));
            }
            let response = req.send().await.unwrap();
            assert!(response.status().is_client_error(), "{mouth:?} {uri}");
            assert_no_claim_headers(&response, &format!("{mouth:?} {uri} {token:?}"));
        }
    }
}

#[tokio::test]
async fn claim_values_with_cr_lf_are_percent_encoded_in_claim_headers() {
    let (idp, app) = start("").await;
    let token = idp.mint(idp.valid_claims("alice\r\nX-Injected: yes"));
    for mouth in MOUTHS {
        let response = ask(&app, mouth, "/items", Some(&token)).await;
        assert_eq!(response.status(), 200, "{mouth:?}");
        assert_eq!(
            header(&response, "x-auth-subject"),
            Some("alice%0D%0AX-Injected: yes"),
            "{mouth:?}"
        );
        assert!(response.headers().get("x-injected").is_none(), "{mouth:?}");
    }
}

#[tokio::test]
async fn a_query_token_in_the_original_uri_is_used_when_enabled() {
    let (idp, app) = start("token: {query: {enabled: true}}").await;
    let token = idp.mint(idp.valid_claims("alice"));
    for mouth in MOUTHS {
        let uri = format!("/x?page=2&access_token={token}");
        let response = ask(&app, mouth, &uri, None).await;
        assert_eq!(response.status(), 200, "{mouth:?}");
        assert_eq!(
            header(&response, "x-auth-subject"),
            Some("alice"),
            "{mouth:?}"
        );

        // Header and query together are two tokens: a malformed request.
        let response = ask(&app, mouth, &uri, Some(&token)).await;
        let expected = if mouth == Mouth::Nginx { 401 } else { 400 };
        assert_eq!(response.status(), expected, "{mouth:?}");
        assert!(
            challenge(&response).contains("invalid_request"),
            "{mouth:?}"
        );
    }
}

#[tokio::test]
async fn a_query_token_is_ignored_when_the_query_source_is_disabled() {
    let (idp, app) = start("").await;
    let token = idp.mint(idp.valid_claims("alice"));
    for mouth in MOUTHS {
        let uri = format!("/x?access_token={token}");
        let response = ask(&app, mouth, &uri, None).await;
        assert_eq!(response.status(), 401, "{mouth:?}: query token used");
        assert_eq!(
            challenge(&response),
            r#"Bearer realm="authgate""#,
            "{mouth:?}"
        );

        // Not read at all, so not a second token beside the header one.
        let response = ask(&app, mouth, &uri, Some(&token)).await;
        assert_eq!(response.status(), 200, "{mouth:?}");
    }
}

#[tokio::test]
async fn an_anonymous_route_allows_without_a_token_and_a_deny_route_forbids_even_a_valid_one() {
    let routes = "routes:\n  - {path_prefix: /public, action: anonymous}\n  - {path_glob: \"/internal/**\", action: deny}";
    let (idp, app) = start(routes).await;
    let token = idp.mint(idp.valid_claims("alice"));
    for mouth in MOUTHS {
        let response = ask(&app, mouth, "/public/logo.png", None).await;
        assert_eq!(response.status(), 200, "{mouth:?}");
        assert_no_claim_headers(&response, "anonymous allow");

        let response = ask(&app, mouth, "/internal/metrics", Some(&token)).await;
        assert_eq!(response.status(), 403, "{mouth:?}");
        assert_no_claim_headers(&response, &format!("{mouth:?} deny route"));

        // Prefixes match on segment boundaries: /publicity is not /public.
        let response = ask(&app, mouth, "/publicity", None).await;
        assert_eq!(response.status(), 401, "{mouth:?}");
    }
}

#[tokio::test]
async fn a_check_without_an_original_uri_is_malformed_where_rules_look_at_the_path() {
    let (_idp, app) = start("routes: [{path_prefix: /, action: anonymous}]").await;
    assert_eq!(ask(&app, Mouth::Traefik, "/", None).await.status(), 200);
    assert_eq!(ask(&app, Mouth::Nginx, "/", None).await.status(), 200);

    let response = app
        .client
        .get(app.url("/auth"))
        .header("X-Forwarded-Method", "GET")
        .header("X-Forwarded-Host", "api.example.com")
        .send()
        .await
        .unwrap();
    // Route rules look at the path and the proxy did not send it: a malformed check (400),
    // never the anonymous rule and never a silently skipped rule.
    assert_eq!(response.status(), 400, "/auth without X-Forwarded-Uri");
    let response = app
        .client
        .get(app.url("/auth/nginx"))
        .header("X-Original-Method", "GET")
        .send()
        .await
        .unwrap();
    // The same on nginx's profile, where a 400 is answered as 401 invalid_request.
    assert_eq!(response.status(), 401, "/auth/nginx without X-Original-URI");
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        challenge.contains("error=\"invalid_request\""),
        "{challenge}"
    );
}

#[tokio::test]
async fn oversized_request_headers_are_refused_and_the_server_keeps_serving() {
    let (idp, app) = start("limits: {max_header_bytes: 8192}").await;
    let token = idp.mint(idp.valid_claims("alice"));

    // Over a raw socket, so that whatever authgate does (an error status or a closed
    // connection) is seen as it is.
    let mut stream = tokio::net::TcpStream::connect(app.http).await.unwrap();
    let padding = "a".repeat(16 * 1024);
    let head = format!(
        "GET /auth HTTP/1.1\r\nHost: authgate\r\nX-Forwarded-Uri: /items\r\n\
         Authorization: Bearer {token}\r\nX-Padding: {padding}\r\n\r\n"
    );
    // The server may close the connection before the whole head is written.
    let _ = stream.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the connection was neither answered nor closed");
    let answer = String::from_utf8_lossy(&answer);
    // 431 Request Header Fields Too Large, or at least a closed connection: never a decision.
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "an oversized request was answered: {answer}"
    );

    for mouth in MOUTHS {
        let response = ask(&app, mouth, "/items", Some(&token)).await;
        assert_eq!(
            response.status(),
            200,
            "{mouth:?} after the oversized request"
        );
    }
}

#[tokio::test]
async fn the_envoy_prefix_is_stripped_before_route_matching() {
    let (_idp, app) = start("routes: [{path_prefix: /api, action: anonymous}]").await;
    for (path, expected) in [
        ("/envoy/api", 200),
        ("/envoy/api/x", 200),
        ("/envoy/api/x?y=1", 200),
        ("/envoy/apix", 401),
        ("/envoy/other/api", 401),
        ("/envoy", 401),
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), expected, "{path}");
    }
    let response = app
        .client
        .post(app.url("/envoy/api/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "any method of the original request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_over_the_concurrency_limit_are_shed_at_once_not_queued() {
    let idp = TestIdp::start().await;
    // A cold start with a slow JWKS: the one admitted check holds its permit while it waits.
    idp.set_delay(Duration::from_millis(800));
    let token = idp.mint(idp.valid_claims("alice"));
    let yaml = format!(
        "issuers: [{{issuer: \"{}\"}}]\naudiences: [authgate-test]\n\
         limits: {{max_concurrent_checks: 1, check_deadline: 5s}}\n",
        idp.issuer()
    );
    let app = App::start(&yaml).await;

    let mut checks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (client, url, token) = (app.client.clone(), app.url("/auth"), token.clone());
        checks.spawn(async move {
            let started = std::time::Instant::now();
            let response = client
                .get(url)
                .header("X-Forwarded-Uri", "/items")
                .header("Authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap();
            let retry_after = response.headers().get("retry-after").is_some();
            (response.status().as_u16(), retry_after, started.elapsed())
        });
    }
    let answers = checks.join_all().await;
    let allowed = answers.iter().filter(|a| a.0 == 200).count();
    let shed: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    assert_eq!(allowed + shed.len(), answers.len(), "{answers:?}");
    assert!(allowed >= 1, "{answers:?}");
    assert!(!shed.is_empty(), "nothing shed: {answers:?}");
    for (_, retry_after, took) in shed {
        assert!(*retry_after, "a shed check without Retry-After");
        assert!(
            *took < Duration::from_millis(500),
            "shed after {took:?}: queued"
        );
    }
    assert!(app.metrics().await.contains("authgate_checks_shed_total"));
}

#[tokio::test]
async fn an_envoy_allow_tells_envoy_to_drop_owned_headers_that_have_no_value() {
    let extra = "routes:\n  - {path_prefix: /public, action: anonymous}\nclaim_headers:\n  - {claim: sub, header: X-Auth-Subject}\n  - {claim: email, header: X-Auth-Email}";
    let (idp, app) = start(extra).await;
    let remove =
        |r: &reqwest::Response| header(r, "x-envoy-auth-headers-to-remove").map(str::to_owned);

    // Anonymous: no identity, so every owned header must be stripped from the client's request.
    let response = ask(&app, Mouth::Envoy, "/public/x", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        remove(&response).as_deref(),
        Some(
            "x-auth-subject, x-auth-email, x_auth_subject, x.auth.subject, x_auth_email, x.auth.email"
        )
    );

    // A token without `email`: the subject is set (overwrite), the email header removed.
    let response = ask(
        &app,
        Mouth::Envoy,
        "/api",
        Some(&idp.mint(idp.valid_claims("alice"))),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-auth-subject"), Some("alice"));
    assert_eq!(
        remove(&response).as_deref(),
        Some("x-auth-email, x_auth_subject, x.auth.subject, x_auth_email, x.auth.email")
    );

    // Traefik and nginx strip owned headers by their own config; the header is Envoy's alone.
    let response = ask(&app, Mouth::Traefik, "/public/x", None).await;
    assert_eq!(remove(&response), None);
}

#[tokio::test]
async fn a_joined_authorization_header_with_two_tokens_is_a_bad_request_on_envoy() {
    // Envoy's HTTP mode joins repeated Authorization headers into one value with `,`.
    let (idp, app) = start("token: {strip_upstream: true}").await;
    let token = idp.mint(idp.valid_claims("alice"));
    let response = request(&app, Mouth::Envoy, "/items")
        .header("Authorization", format!("Bearer {token},Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(challenge(&response).contains(r#"error="invalid_request""#));

    // With strip_upstream, an allow tells Envoy to remove the Authorization header too.
    let response = ask(&app, Mouth::Envoy, "/items", Some(&token)).await;
    assert_eq!(response.status(), 200);
    let remove = header(&response, "x-envoy-auth-headers-to-remove").unwrap_or_default();
    assert!(remove.split(", ").any(|h| h == "authorization"), "{remove}");
}

#[tokio::test]
async fn an_original_uri_that_is_not_ascii_is_a_malformed_request_not_a_missing_path() {
    // Were it read as "no path", a deny rule on the path would not match and a valid token
    // would pass.
    let (idp, app) = start("routes:\n  - {path_glob: \"/internal/**\", action: deny}").await;
    let token = idp.mint(idp.valid_claims("alice"));
    let value = reqwest::header::HeaderValue::from_bytes(b"/internal/\xff").unwrap();
    for (path, header_name, expected) in [
        ("/auth", "X-Forwarded-Uri", 400),
        ("/auth/nginx", "X-Original-URI", 401),
    ] {
        let response = app
            .client
            .get(app.url(path))
            .header("Authorization", format!("Bearer {token}"))
            .header(header_name, value.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{path}");
        assert!(
            challenge(&response).contains(r#"error="invalid_request""#),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_second_word_after_the_bearer_token_is_a_malformed_request_on_every_mouth() {
    let (idp, app) = start("").await;
    let token = idp.mint(idp.valid_claims("alice"));
    for (mouth, status) in [
        (Mouth::Traefik, 400),
        (Mouth::Nginx, 401),
        (Mouth::Envoy, 400),
    ] {
        let response = request(&app, mouth, "/items")
            .header("Authorization", format!("Bearer {token} junk"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{mouth:?}");
        assert!(
            challenge(&response).contains(r#"error="invalid_request""#),
            "{mouth:?}: {}",
            challenge(&response)
        );
        assert_no_claim_headers(&response, &format!("{mouth:?}"));
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"reason="malformed_authorization""#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_scope_claim_of_the_wrong_type_is_an_invalid_token_not_a_missing_scope() {
    let (idp, app) = start("require: {scopes: [read]}").await;
    for scopes in [
        json!({"scope": 5}),
        json!({"scope": ["read"]}),
        json!({"scp": 7}),
        json!({"scp": ["read", 1]}),
    ] {
        let mut claims = idp.valid_claims("alice");
        for (k, v) in scopes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let token = idp.mint(claims);
        for mouth in MOUTHS {
            let response = ask(&app, mouth, "/items", Some(&token)).await;
            assert_invalid_token(&response, &format!("{scopes} via {mouth:?}"));
        }
    }
    // The well-formed spellings still carry the scope.
    for scopes in [json!({"scope": "read write"}), json!({"scp": ["read"]})] {
        let mut claims = idp.valid_claims("alice");
        for (k, v) in scopes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let response = ask(&app, Mouth::Traefik, "/items", Some(&idp.mint(claims))).await;
        assert_eq!(response.status(), 200, "{scopes}");
    }
}

#[tokio::test]
async fn a_raw_space_in_the_forwarded_uri_is_as_ambiguous_as_a_tab() {
    let (_idp, app) = start("routes:\n  - {path_prefix: /public, action: anonymous}").await;
    for (mouth, status) in [(Mouth::Traefik, 400), (Mouth::Nginx, 401)] {
        for uri in ["/public/a b", "/public/a\tb", "/public/x?q=a b"] {
            let response = request(&app, mouth, uri).send().await.unwrap();
            assert_eq!(response.status(), status, "{mouth:?} {uri:?}");
            assert!(
                challenge(&response).contains(r#"error="invalid_request""#),
                "{mouth:?} {uri:?}"
            );
        }
        // Encoded, the same path is the upstream's business: allowed anonymously.
        let response = request(&app, mouth, "/public/a%20b").send().await.unwrap();
        assert_eq!(response.status(), 200, "{mouth:?}");
    }
}

#[tokio::test]
async fn array_claims_with_commas_cannot_pass_for_more_elements() {
    let (idp, app) = start(
        "claim_headers:\n  - {claim: sub, header: X-Auth-Subject}\n  - {claim: groups, header: X-Auth-Groups}",
    )
    .await;
    let groups = |value: serde_json::Value| {
        let mut claims = idp.valid_claims("alice");
        claims["groups"] = value;
        idp.mint(claims)
    };
    let mut seen = Vec::new();
    for (value, want) in [
        (json!(["a,admin"]), "a%2Cadmin"),
        (json!(["a", "admin"]), "a,admin"),
        (json!(["a%2Cadmin"]), "a%252Cadmin"),
        (json!("a,admin"), "a,admin"),
    ] {
        for mouth in MOUTHS {
            let response = ask(&app, mouth, "/items", Some(&groups(value.clone()))).await;
            assert_eq!(response.status(), 200, "{value} via {mouth:?}");
            assert_eq!(
                header(&response, "x-auth-groups"),
                Some(want),
                "{value} via {mouth:?}"
            );
        }
        seen.push(want);
    }
    assert_ne!(
        seen[0], seen[1],
        "one element with a comma must differ from two elements"
    );
}

#[tokio::test]
async fn an_envoy_allow_names_the_clients_own_spelling_of_an_owned_header() {
    let (idp, app) = start("").await;
    let token = idp.mint(idp.valid_claims("alice"));
    let response = request(&app, Mouth::Envoy, "/items")
        .header("Authorization", format!("Bearer {token}"))
        .header("X-Auth.Subject", "admin")
        .header("x_auth.issuer", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let remove: Vec<&str> = header(&response, "x-envoy-auth-headers-to-remove")
        .unwrap_or_default()
        .split(", ")
        .collect();
    for alias in [
        "x-auth.subject",
        "x_auth.issuer",
        "x.auth.subject",
        "x_auth_subject",
    ] {
        assert!(remove.contains(&alias), "{alias}: {remove:?}");
    }
    assert_eq!(header(&response, "x-auth-subject"), Some("alice"));
}
