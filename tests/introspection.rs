//! Opaque tokens verified by introspection (RFC 7662) over real sockets, against the test IdP's
//! introspection endpoint: the answer's claims go through the same checks and claim headers as
//! a JWT's; answers are remembered (active until `min(exp, cache_ttl)`, inactive briefly),
//! shared by concurrent checks and bounded per second; an endpoint that is down, slow or
//! answers nonsense is `unavailable`, never an allow; `introspect_jwts` catches revoked JWTs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use std::time::Duration;

use common::app::App;
use common::idp::{Fault, TEST_AUDIENCE, TestIdp};
use common::metrics::metric;
use serde_json::{Value, json};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An authgate whose issuer introspects with client_secret_basic, plus `introspection` settings
/// and `extra` top-level YAML.
async fn start(introspection: &str, extra: &str) -> (TestIdp, App) {
    start_with(introspection, "", extra).await
}

/// [`start`], with `issuer_extra` YAML in the issuer's flow mapping.
async fn start_with(introspection: &str, issuer_extra: &str, extra: &str) -> (TestIdp, App) {
    let idp = TestIdp::start().await;
    let yaml = format!(
        "issuers:\n  - issuer: \"{}\"\n    client_id: authgate\n    client_secret: s3cret\n    introspection: {{enabled: true, {introspection}}}\n{issuer_extra}audiences: [{TEST_AUDIENCE}]\nlimits: {{check_deadline: 1s}}\n{extra}\n",
        idp.issuer()
    );
    let app = App::start(&yaml).await;
    assert!(app.wait_ready(Duration::from_secs(5)).await);
    (idp, app)
}

fn active_claims(subject: &str) -> Value {
    json!({
        "sub": subject,
        "aud": TEST_AUDIENCE,
        "exp": now() + 300,
        "iat": now(),
        "scope": "api:read",
        "client_id": "web",
        "token_type": "Bearer",
    })
}

#[tokio::test]
async fn an_active_opaque_token_is_allowed_with_claim_headers_and_remembered() {
    let (idp, app) = start("cache_ttl: 1m", "").await;
    let token = idp.issue_opaque(active_claims("alice"));
    for round in 0..3 {
        let response = app.check(Some(&token)).await;
        assert_eq!(response.status(), 200, "round {round}");
        assert_eq!(response.headers()["x-auth-subject"], "alice");
        assert_eq!(response.headers()["x-auth-issuer"], idp.issuer().as_str());
    }
    // One call for three checks, authenticated as the issuer's client, with the token.
    let calls = idp.introspection_requests();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].param("token"), Some(token.as_str()));
    assert_eq!(calls[0].param("token_type_hint"), Some("access_token"));
    assert_eq!(
        calls[0].authorization.as_deref(),
        Some("Basic YXV0aGdhdGU6czNjcmV0")
    );
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "authgate_introspection_requests_total{result=\"active\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "authgate_introspection_cache_lookups_total{result=\"hit\"}"
        ),
        Some(2.0)
    );
    // The token itself never shows in the metrics.
    assert!(!metrics.contains(&token));
}

#[tokio::test]
async fn inactive_unknown_and_revoked_tokens_are_invalid() {
    let (idp, app) = start("cache_ttl: 1s, negative_ttl: 1s", "").await;
    let unknown = app.check(Some("an-opaque-token-nobody-issued")).await;
    assert_eq!(unknown.status(), 401);
    let challenge = unknown.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");

    let token = idp.issue_opaque(active_claims("alice"));
    assert_eq!(app.check(Some(&token)).await.status(), 200);
    idp.revoke(&token);
    // Denied once the remembered answer is older than cache_ttl.
    assert!(
        common::app::eventually(Duration::from_secs(4), || async {
            app.check(Some(&token)).await.status() == 401
        })
        .await,
        "a revoked token was still allowed 4 s after revocation with cache_ttl 1s"
    );
}

#[tokio::test]
async fn the_answer_goes_through_the_jwt_checks() {
    let (idp, app) = start(
        "cache_ttl: 1m",
        "routes: [{path_prefix: /admin, require: {scopes: [api:admin]}}]",
    )
    .await;
    let mut wrong_audience = active_claims("alice");
    wrong_audience["aud"] = json!("someone-else");
    let mut expired = active_claims("alice");
    expired["exp"] = json!(now() - 600);
    let mut other_issuer = active_claims("alice");
    other_issuer["iss"] = json!("https://other.example.com");
    let mut bad_scope = active_claims("alice");
    bad_scope["scope"] = json!(42);
    for (name, claims) in [
        ("wrong audience", wrong_audience),
        ("expired", expired),
        ("another issuer's", other_issuer),
        ("a scope that is not a string", bad_scope),
    ] {
        let token = idp.issue_opaque(claims);
        assert_eq!(app.check(Some(&token)).await.status(), 401, "{name}");
    }
    let token = idp.issue_opaque(active_claims("alice"));
    let admin = app
        .client
        .get(app.url("/auth"))
        .header("X-Forwarded-Uri", "/admin")
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 403, "route scopes apply to opaque tokens");
    // Without exp the answer is good while it is remembered.
    let mut no_exp = active_claims("carol");
    no_exp.as_object_mut().unwrap().remove("exp");
    let token = idp.issue_opaque(no_exp);
    assert_eq!(app.check(Some(&token)).await.status(), 200);
}

#[tokio::test]
async fn an_endpoint_that_fails_is_unavailable_never_an_allow_and_not_remembered() {
    let (idp, app) = start("cache_ttl: 1m", "").await;
    let token = idp.issue_opaque(active_claims("alice"));
    for fault in [
        Fault::Status(500),
        Fault::Status(401),
        Fault::MalformedJson,
        Fault::WrongShape,
        // Over the 16 KiB an answer may have (well within keys.max_body_bytes).
        Fault::HugeBody(64 * 1024),
        Fault::HugeBody(2 * 1024 * 1024),
    ] {
        idp.set_introspection_fault(fault.clone());
        let response = app.check(Some(&token)).await;
        assert_eq!(response.status(), 503, "{fault:?}");
        assert!(response.headers().contains_key("retry-after"), "{fault:?}");
        // nginx's mouth answers 401 (nginx turns other statuses into 500), never 200.
        let nginx = app
            .client
            .get(app.url("/auth/nginx"))
            .header("Authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(nginx.status(), 401, "{fault:?}");
    }
    // Slower than the check deadline (1 s).
    idp.set_introspection_fault(Fault::None);
    idp.set_introspection_delay(Duration::from_millis(1500));
    let started = std::time::Instant::now();
    assert_eq!(app.check(Some(&token)).await.status(), 503);
    assert!(started.elapsed() < Duration::from_millis(1400));
    // Healthy again: asked anew (outages are not remembered).
    idp.set_introspection_delay(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        common::app::eventually(Duration::from_secs(3), || async {
            app.check(Some(&token)).await.status() == 200
        })
        .await
    );
    idp.set_down(true);
    let other = idp.issue_opaque(active_claims("bob"));
    assert_eq!(app.check(Some(&other)).await.status(), 503);
}

#[tokio::test]
async fn concurrent_checks_share_one_call_and_calls_per_second_are_bounded() {
    let (idp, app) = start("cache_ttl: 1m, max_calls_per_second: 2", "").await;
    let token = idp.issue_opaque(active_claims("alice"));
    idp.set_introspection_delay(Duration::from_millis(300));
    let checks: Vec<_> = (0..20).map(|_| app.check(Some(&token))).collect();
    let statuses: Vec<u16> = futures_util::future::join_all(checks)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(idp.introspection_requests().len(), 1);

    // Five different tokens at once: two calls this second, the rest unavailable.
    let tokens: Vec<String> = (0..5)
        .map(|i| idp.issue_opaque(active_claims(&format!("user{i}"))))
        .collect();
    let checks: Vec<_> = tokens.iter().map(|t| app.check(Some(t))).collect();
    let statuses: Vec<u16> = futures_util::future::join_all(checks)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(idp.introspection_requests().len() <= 3, "{statuses:?}");
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    let metrics = app.metrics().await;
    assert!(
        metric(
            &metrics,
            "authgate_introspection_requests_total{result=\"rate_limited\"}"
        )
        .is_some_and(|n| n >= 1.0)
    );
}

#[tokio::test]
async fn introspect_jwts_denies_a_revoked_jwt() {
    let (idp, app) = start_with("cache_ttl: 1s", "    introspect_jwts: true\n", "").await;
    let jwt = idp.mint(idp.valid_claims("alice"));
    assert_eq!(app.check(Some(&jwt)).await.status(), 200);
    assert_eq!(app.check(Some(&jwt)).await.status(), 200);
    assert_eq!(idp.introspection_requests().len(), 1, "remembered");
    idp.revoke(&jwt);
    assert!(
        common::app::eventually(Duration::from_secs(4), || async {
            app.check(Some(&jwt)).await.status() == 401
        })
        .await
    );
    // A JWT with a bad signature is refused before anyone is asked.
    let before = idp.introspection_requests().len();
    let forged = format!("{}x", &jwt[..jwt.len() - 1]);
    assert_eq!(app.check(Some(&forged)).await.status(), 401);
    assert_eq!(idp.introspection_requests().len(), before);
}

#[tokio::test]
async fn without_introspection_an_opaque_token_is_malformed() {
    let (idp, app) = App::with_idp("").await;
    let token = idp.issue_opaque(active_claims("alice"));
    assert_eq!(app.check(Some(&token)).await.status(), 401);
    assert!(idp.introspection_requests().is_empty());
}
