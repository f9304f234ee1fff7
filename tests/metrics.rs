//! The admin port: `/metrics` after real allows and denies (decisions, latency, fetches, key set
//! state, build info, and never any token text), `/version` and `/healthz`.
//!
//! The metrics recorder is process-wide: counters are asserted with lower bounds, and per-issuer
//! series through the issuer of this test's own IdP (a unique port).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use common::app::App;
use common::idp::TestIdp;
use common::metrics::metric;
use serde_json::{Value, json};

async fn start() -> (TestIdp, App) {
    App::with_idp("").await
}

fn at_least(text: &str, series: &str, min: f64) {
    let value = metric(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert!(value >= min, "{series} = {value}, expected at least {min}");
}

#[tokio::test]
async fn metrics_count_decisions_fetches_and_keys_without_any_token_text() {
    let (idp, app) = start().await;
    let subject = "subject-6d1f0c";
    let token = idp.mint(idp.valid_claims(subject));
    let expired = {
        let mut claims = idp.valid_claims(subject);
        claims["exp"] = json!(1);
        idp.mint(claims)
    };
    for _ in 0..3 {
        assert_eq!(app.check(Some(&token)).await.status(), 200);
    }
    assert_eq!(app.check(None).await.status(), 401);
    assert_eq!(app.check(Some(&expired)).await.status(), 401);
    let nginx = app
        .client
        .get(app.url("/auth/nginx"))
        .header("X-Original-URI", "/items")
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(nginx.status(), 200);

    let text = app.metrics().await;
    at_least(
        &text,
        r#"authgate_decisions_total{frontend="forward_auth",result="allow",reason="valid_token"}"#,
        3.0,
    );
    at_least(
        &text,
        r#"authgate_decisions_total{frontend="forward_auth",result="deny",reason="missing_token"}"#,
        1.0,
    );
    at_least(
        &text,
        r#"authgate_decisions_total{frontend="forward_auth",result="deny",reason="expired"}"#,
        1.0,
    );
    at_least(
        &text,
        r#"authgate_decisions_total{frontend="nginx",result="allow",reason="valid_token"}"#,
        1.0,
    );
    at_least(
        &text,
        r#"authgate_decision_duration_seconds_count{frontend="forward_auth"}"#,
        5.0,
    );
    assert!(
        text.contains(
            r#"authgate_decision_duration_seconds_bucket{frontend="forward_auth",le="0.15"}"#
        ),
        "no latency bucket at the 150 ms deadline:\n{text}"
    );
    let issuer = idp.issuer();
    at_least(
        &text,
        &format!(r#"authgate_jwks_fetches_total{{issuer="{issuer}",result="ok"}}"#),
        1.0,
    );
    assert_eq!(
        metric(
            &text,
            &format!(r#"authgate_keys_loaded{{issuer="{issuer}"}}"#)
        ),
        Some(1.0)
    );
    let age = metric(
        &text,
        &format!(r#"authgate_key_set_age_seconds{{issuer="{issuer}"}}"#),
    )
    .unwrap_or_else(|| panic!("no key set age:\n{text}"));
    assert!((0.0..60.0).contains(&age), "key set age {age}");
    assert_eq!(
        metric(
            &text,
            &format!(
                r#"authgate_build_info{{version="{}",commit="{}"}}"#,
                authgate::telemetry::VERSION,
                authgate::telemetry::GIT_COMMIT
            )
        ),
        Some(1.0),
        "{text}"
    );

    for secret in [token.as_str(), expired.as_str(), subject] {
        assert!(!text.contains(secret), "token-derived text in /metrics");
    }
    for segment in token.split('.').chain(expired.split('.')) {
        assert!(!text.contains(segment), "a token segment in /metrics");
    }
}

#[tokio::test]
async fn the_verified_token_cache_reports_hits_misses_evictions_and_its_size() {
    let (idp, app) = App::with_idp("verified_cache: {capacity: 3}").await;
    let token = idp.mint(idp.valid_claims("cached"));
    for _ in 0..3 {
        assert_eq!(app.check(Some(&token)).await.status(), 200);
    }
    for i in 0..10 {
        let other = idp.mint(idp.valid_claims(&format!("user-{i}")));
        assert_eq!(app.check(Some(&other)).await.status(), 200);
    }
    let text = app.metrics().await;
    at_least(
        &text,
        r#"authgate_verified_cache_lookups_total{result="hit"}"#,
        2.0,
    );
    at_least(
        &text,
        r#"authgate_verified_cache_lookups_total{result="miss"}"#,
        11.0,
    );
    at_least(&text, "authgate_verified_cache_evictions_total", 1.0);
    // Gauges of the last scraped decider (the recorder is process-wide; no test here caches
    // more than three tokens).
    let entries = metric(&text, "authgate_verified_cache_entries").expect("entries");
    assert!((1.0..=3.0).contains(&entries), "{entries} entries");
    at_least(&text, "authgate_verified_cache_bytes", 100.0);
}

#[tokio::test]
async fn version_reports_the_version_and_commit_and_healthz_is_live() {
    let (_idp, app) = start().await;
    let response = app
        .client
        .get(app.admin_url("/version"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"))
    );
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        body["commit"].as_str().is_some_and(|c| !c.is_empty()),
        "{body}"
    );

    assert_eq!(app.healthz().await, 200);
    assert_eq!(app.readyz().await, 200);
}
