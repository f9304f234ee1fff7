//! Policy over real sockets: two issuers with their own key sets (the same `kid` at both), and
//! per-issuer settings and token-shape rules (`leeway`, `max_token_lifetime`,
//! `required_claims`, `email_domain`) as a proxy's check sees them on `/auth`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::app::App;
use common::idp::TestIdp;
use serde_json::json;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn two_issuers(a_fields: &str, b_fields: &str, extra: &str) -> (TestIdp, TestIdp, App) {
    let (a, b) = (TestIdp::start().await, TestIdp::start().await);
    let yaml = format!(
        "issuers:\n  - {{issuer: \"{}\"{a_fields}}}\n  - {{issuer: \"{}\"{b_fields}}}\naudiences: [authgate-test]\n{extra}\n",
        a.issuer(),
        b.issuer()
    );
    let app = App::start(&yaml).await;
    assert!(app.wait_ready(Duration::from_secs(5)).await);
    (a, b, app)
}

fn reason_of(response: &reqwest::Response) -> String {
    response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn keys_are_per_issuer_even_under_the_same_kid() {
    let (a, b, app) = two_issuers("", "", "").await;
    // Both test IdPs publish their own RSA key under kid k1.
    assert_eq!(a.published_kids(), ["k1"]);
    assert_eq!(b.published_kids(), ["k1"]);
    let from_a = a.mint(a.valid_claims("alice"));
    let from_b = b.mint(b.valid_claims("bob"));
    assert_eq!(app.check(Some(&from_a)).await.status(), 200);
    assert_eq!(app.check(Some(&from_b)).await.status(), 200);
    // A's key on a token that claims B: B's k1 does not verify it.
    let forged = a.mint(b.valid_claims("mallory"));
    let response = app.check(Some(&forged)).await;
    assert_eq!(response.status(), 401);
    assert!(reason_of(&response).contains("invalid_token"));
}

#[tokio::test]
async fn per_issuer_settings_and_shape_rules_apply_to_that_issuers_tokens_only() {
    let (a, b, app) = two_issuers(
        ", leeway: 60s, required_claims: [jti]",
        ", max_token_lifetime: 10m",
        "leeway: 0s\nrequire: {claims: [{claim: email, email_domain: [example.com]}]}",
    )
    .await;
    let t = now();
    let claims = |idp: &TestIdp, patch: serde_json::Value| {
        let mut c = idp.valid_claims("alice");
        c["email"] = json!("alice@example.com");
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        idp.mint(c)
    };
    // A: 60 s leeway, jti required.
    let late = claims(
        &a,
        json!({"jti": "1", "iat": t - 100, "nbf": t - 100, "exp": t - 30}),
    );
    assert_eq!(
        app.check(Some(&late)).await.status(),
        200,
        "within A's leeway"
    );
    let no_jti = claims(&a, json!({}));
    assert_eq!(
        app.check(Some(&no_jti)).await.status(),
        401,
        "A requires jti"
    );
    // B: no leeway (top level), no jti needed, at most 10 minutes of lifetime.
    let late_b = claims(&b, json!({"iat": t - 100, "nbf": t - 100, "exp": t - 30}));
    assert_eq!(
        app.check(Some(&late_b)).await.status(),
        401,
        "B has no leeway"
    );
    assert_eq!(app.check(Some(&claims(&b, json!({})))).await.status(), 200);
    let long = claims(&b, json!({"iat": t, "exp": t + 3600}));
    assert_eq!(
        app.check(Some(&long)).await.status(),
        401,
        "B's lifetime bound"
    );
    // The email domain rule (top level) for both.
    let other_domain = claims(&b, json!({"email": "alice@evil.com"}));
    let response = app.check(Some(&other_domain)).await;
    assert_eq!(response.status(), 403);
    assert!(reason_of(&response).contains("insufficient_scope"));
    // Every denial above is counted with its reason.
    let metrics = app.metrics().await;
    for reason in [
        "missing_claim",
        "expired",
        "token_lifetime_too_long",
        "claim_mismatch",
    ] {
        let series = format!(
            "authgate_decisions_total{{frontend=\"forward_auth\",result=\"deny\",reason=\"{reason}\"}}"
        );
        assert!(
            common::metrics::metric(&metrics, &series).unwrap_or(0.0) >= 1.0,
            "{reason}: {metrics}"
        );
    }
}

#[tokio::test]
async fn an_anonymous_route_passes_the_identity_of_a_valid_token_and_counts_invalid_ones() {
    let idp = TestIdp::start().await;
    let app = App::start(&common::app::idp_config(
        &idp,
        "routes: [{path_prefix: /public, action: anonymous}]",
    ))
    .await;
    assert!(app.wait_ready(Duration::from_secs(5)).await);
    let at_public = |token: &str| {
        app.client
            .get(app.url("/auth"))
            .header("x-forwarded-uri", "/public/home")
            .header("authorization", format!("Bearer {token}"))
            .send()
    };
    let valid = at_public(&idp.mint(idp.valid_claims("alice")))
        .await
        .unwrap();
    assert_eq!(valid.status(), 200);
    assert_eq!(valid.headers()["x-auth-subject"], "alice");
    let mut expired = idp.valid_claims("mallory");
    expired["exp"] = json!(now() - 3600);
    let invalid = at_public(&idp.mint(expired)).await.unwrap();
    assert_eq!(invalid.status(), 200, "still allowed");
    assert!(
        invalid.headers().get("x-auth-subject").is_none(),
        "without identity"
    );
    let metrics = app.metrics().await;
    let series = "authgate_anonymous_invalid_tokens_total{reason=\"expired\"}";
    assert!(
        common::metrics::metric(&metrics, series).unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn claim_headers_come_from_the_route_else_the_issuer_else_the_top_level() {
    let (a, b) = (TestIdp::start().await, TestIdp::start().await);
    let yaml = format!(
        "issuers:\n  - {{issuer: \"{}\", claim_headers: [{{claim: sub, header: X-A-User}}]}}\n  - {{issuer: \"{}\"}}\naudiences: [authgate-test]\nclaim_headers: [{{claim: sub, header: X-User}}, {{claim: iss, header: X-Issuer}}]\nroutes:\n  - {{path_prefix: /reports, claim_headers: [{{claim: email, header: X-Email}}]}}\n",
        a.issuer(),
        b.issuer()
    );
    let app = App::start(&yaml).await;
    assert!(app.wait_ready(Duration::from_secs(5)).await);
    let token = |idp: &TestIdp| {
        let mut c = idp.valid_claims("alice");
        c["email"] = json!("alice@example.com");
        idp.mint(c)
    };
    let get = |path: &'static str, token: String| {
        app.client
            .get(app.url("/auth"))
            .header("x-forwarded-uri", path)
            .header("authorization", format!("Bearer {token}"))
            .send()
    };
    let names = |r: &reqwest::Response| {
        let mut n: Vec<String> = r
            .headers()
            .keys()
            .map(|k| k.as_str().to_owned())
            .filter(|k| k.starts_with("x-"))
            .collect();
        n.sort();
        n
    };
    // Issuer B: the top-level mapping.
    let top = get("/api", token(&b)).await.unwrap();
    assert_eq!(names(&top), ["x-issuer", "x-user"]);
    // Issuer A: its own.
    let own = get("/api", token(&a)).await.unwrap();
    assert_eq!(names(&own), ["x-a-user"]);
    assert_eq!(own.headers()["x-a-user"], "alice");
    // The route's, for either issuer (the same cached token, another mapping).
    for idp in [&a, &b] {
        let route = get("/reports/q1", token(idp)).await.unwrap();
        assert_eq!(names(&route), ["x-email"]);
    }
}

#[tokio::test]
async fn the_payload_header_carries_the_verified_payload_within_the_size_cap() {
    let idp = TestIdp::start().await;
    let app = App::start(&common::app::idp_config(
        &idp,
        "payload_header: {enabled: true}\nmax_claim_header_bytes: 600",
    ))
    .await;
    assert!(app.wait_ready(Duration::from_secs(5)).await);
    let token = idp.mint(idp.valid_claims("alice"));
    for round in 0..2 {
        // The second round is a verified-cache hit.
        let response = app.check(Some(&token)).await;
        assert_eq!(response.status(), 200);
        let payload = response.headers()["x-auth-payload"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(payload, token.split('.').nth(1).unwrap(), "round {round}");
        use base64::Engine as _;
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["sub"], "alice");
    }
    // Over the cap: left out (and counted), the check still allowed.
    let mut big = idp.valid_claims("bob");
    big["blob"] = json!("x".repeat(800));
    let response = app.check(Some(&idp.mint(big))).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-auth-payload").is_none());
    assert_eq!(response.headers()["x-auth-subject"], "bob");
}
