//! The JWKS/discovery key cache over real sockets: rotation, single-flight unknown-kid refetches
//! and their cooldown, outages at and after start, slow and faulty IdPs, key removal and
//! filtering. Durations are configured short so that every test runs in about a second.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use std::time::{Duration, Instant};

use authgate::demo::signing::SigningKey;
use authgate::verify::Alg;
use common::app::{App, eventually};
use common::idp::{Fault, TestIdp};
use common::metrics::metric;
use serde_json::{Value, json};
use tokio::task::JoinSet;

/// How long a test waits for the first key fetch.
const READY_LIMIT: Duration = Duration::from_secs(5);

/// Short key-cache timings shared by most tests.
const FAST_KEYS: &str =
    "keys: {unknown_kid_cooldown: 500ms, min_ttl: 1s, retry_initial: 50ms, retry_max: 200ms}";

fn config(issuer: &str, extra: &str) -> String {
    format!("issuers: [{{issuer: \"{issuer}\"}}]\naudiences: [authgate-test]\n{extra}\n")
}

/// A token signed by the IdP's current key whose header names `kid` instead of the key's own.
fn token_with_kid(idp: &TestIdp, kid: &str) -> String {
    let key = idp.current_key();
    idp.mint_with(
        &key,
        json!({"alg": key.alg().as_str(), "typ": "at+jwt", "kid": kid}),
        idp.valid_claims("alice"),
    )
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

fn retry_after(response: &reqwest::Response) -> Option<u64> {
    header(response, "retry-after").and_then(|v| v.parse().ok())
}

async fn check_at(
    client: &reqwest::Client,
    url: &str,
    token: &str,
) -> (u16, Option<String>, Option<u64>) {
    let response = client
        .get(url)
        .header("X-Forwarded-Method", "GET")
        .header("X-Forwarded-Host", "api.example.com")
        .header("X-Forwarded-Uri", "/items")
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("check request");
    (
        response.status().as_u16(),
        header(&response, "www-authenticate").map(str::to_owned),
        retry_after(&response),
    )
}

/// Sends `count` checks with `token` at once and returns their answers.
async fn concurrent_checks(
    app: &App,
    token: &str,
    count: usize,
) -> Vec<(u16, Option<String>, Option<u64>)> {
    let mut set = JoinSet::new();
    for _ in 0..count {
        let (client, url, token) = (app.client.clone(), app.url("/auth"), token.to_owned());
        set.spawn(async move { check_at(&client, &url, &token).await });
    }
    set.join_all().await
}

/// Sends `count` checks with `token` at once; returns each status with the time, counted from
/// the call, at which its task began to send.
async fn concurrent_timed_checks(app: &App, token: &str, count: usize) -> Vec<(u16, Duration)> {
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..count {
        let (client, url, token) = (app.client.clone(), app.url("/auth"), token.to_owned());
        set.spawn(async move {
            let sent_at = started.elapsed();
            (check_at(&client, &url, &token).await.0, sent_at)
        });
    }
    set.join_all().await
}

async fn status(app: &App, token: &str) -> u16 {
    app.check(Some(token)).await.status().as_u16()
}

#[tokio::test]
async fn a_key_rotated_at_the_idp_costs_one_jwks_fetch_and_is_then_accepted() {
    let idp = TestIdp::start().await;
    let app = App::start(&config(&idp.issuer(), FAST_KEYS)).await;
    assert!(app.wait_ready(READY_LIMIT).await, "never ready");
    assert_eq!((idp.discovery_fetches(), idp.jwks_fetches()), (1, 1));
    let old = idp.mint(idp.valid_claims("alice"));

    let kid = idp.rotate(Alg::ES256);
    let new = idp.mint(idp.valid_claims("bob"));
    let response = app.check(Some(&new)).await;
    assert_eq!(response.status(), 200, "token signed by the new key {kid}");
    assert_eq!(header(&response, "x-auth-subject"), Some("bob"));
    assert_eq!(idp.jwks_fetches(), 2, "exactly one refetch for the new kid");

    // Both keys are cached now: further checks cost no fetch, and discovery is not asked again.
    for token in [&new, &old, &new] {
        assert_eq!(status(&app, token).await, 200);
    }
    assert_eq!((idp.discovery_fetches(), idp.jwks_fetches()), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_checks_with_one_unknown_kid_cost_a_single_refetch() {
    let idp = TestIdp::start().await;
    // The default 30 s cooldown, and a deadline that a loaded CI machine cannot miss.
    let app = App::start(&config(&idp.issuer(), "limits: {check_deadline: 5s}")).await;
    assert!(app.wait_ready(READY_LIMIT).await, "never ready");
    let before = idp.jwks_fetches();

    let answers = concurrent_checks(&app, &token_with_kid(&idp, "ghost"), 100).await;
    assert_eq!(answers.len(), 100);
    for (status, challenge, _) in &answers {
        assert_eq!(*status, 401);
        let challenge = challenge.as_deref().unwrap_or_default();
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
    }
    assert_eq!(idp.jwks_fetches(), before + 1, "one coalesced refetch");
}

#[tokio::test]
async fn unknown_kids_inside_the_cooldown_cost_no_fetch_and_one_more_after_it() {
    let cooldown = Duration::from_secs(1);
    let idp = TestIdp::start().await;
    let keys =
        "keys: {unknown_kid_cooldown: 1s, min_ttl: 1s, retry_initial: 50ms, retry_max: 200ms}";
    let app = App::start(&config(&idp.issuer(), keys)).await;
    assert!(app.wait_ready(READY_LIMIT).await, "never ready");
    let before = idp.jwks_fetches();

    let started = Instant::now();
    assert_eq!(status(&app, &token_with_kid(&idp, "ghost-0")).await, 401);
    assert_eq!(
        idp.jwks_fetches(),
        before + 1,
        "the first unknown kid refetches"
    );
    for i in 1..=5 {
        assert_eq!(
            status(&app, &token_with_kid(&idp, &format!("ghost-{i}"))).await,
            401
        );
    }
    assert_eq!(
        idp.jwks_fetches(),
        before + 1,
        "unknown kids inside the cooldown are denied without fetching"
    );

    let mut n = 100;
    let refetched = eventually(Duration::from_secs(5), || {
        n += 1;
        let token = token_with_kid(&idp, &format!("ghost-{n}"));
        let app = &app;
        let idp = &idp;
        async move {
            assert_eq!(status(app, &token).await, 401);
            idp.jwks_fetches() > before + 1
        }
    })
    .await;
    assert!(refetched, "no refetch after the cooldown");
    assert!(
        started.elapsed() >= cooldown,
        "refetched {:?} after the first refetch, inside the {cooldown:?} cooldown",
        started.elapsed()
    );
    assert_eq!(idp.jwks_fetches(), before + 2, "one fetch per cooldown");
    assert_eq!(status(&app, &token_with_kid(&idp, "ghost-last")).await, 401);
    assert_eq!(idp.jwks_fetches(), before + 2, "a new cooldown started");
}

#[tokio::test]
async fn stale_keys_serve_through_an_outage_until_max_stale_and_recover_without_restart() {
    let max_stale = Duration::from_secs(2);
    let idp = TestIdp::start().await;
    idp.set_cache_control(Some("max-age=1".to_owned()));
    let keys = "keys: {min_ttl: 1s, max_stale: 2s, retry_initial: 50ms, retry_max: 200ms}";
    let app = App::start(&config(&idp.issuer(), keys)).await;
    assert!(app.wait_ready(READY_LIMIT).await, "never ready");
    let token = idp.mint(idp.valid_claims("alice"));

    idp.set_down(true);
    let down_at = Instant::now();
    let fetches = idp.jwks_fetches();
    // Wait for a scheduled refresh to fail: the last good set keeps serving.
    assert!(
        eventually(Duration::from_secs(3), || async {
            idp.jwks_fetches() > fetches
        })
        .await,
        "no refresh was attempted"
    );
    assert_eq!(status(&app, &token).await, 200, "stale keys still serve");
    assert_eq!(
        app.readyz().await,
        200,
        "ready while younger than max_stale"
    );

    // Past max_stale: fail closed, with Retry-After, and not ready.
    assert!(
        eventually(Duration::from_secs(5), || async {
            status(&app, &token).await == 503
        })
        .await,
        "keys never went stale"
    );
    // The set was fetched at most one refresh period (0.8 s at max-age=1) before the outage.
    assert!(
        down_at.elapsed() >= max_stale - Duration::from_millis(900),
        "denied after only {:?}",
        down_at.elapsed()
    );
    let response = app.check(Some(&token)).await;
    assert_eq!(response.status(), 503);
    assert!(retry_after(&response).is_some_and(|s| s > 0));
    assert_eq!(app.readyz().await, 503);
    assert_eq!(app.healthz().await, 200);

    idp.set_down(false);
    assert!(
        app.wait_ready(Duration::from_secs(3)).await,
        "did not recover"
    );
    assert_eq!(
        status(&app, &token).await,
        200,
        "allowed again after recovery"
    );
}

/// The answers of the three HTTP mouths for `token`, each with its duration.
async fn every_mouth(app: &App, token: &str) -> Vec<(&'static str, u16, Option<u64>, Duration)> {
    let mut answers = Vec::new();
    for path in ["/auth", "/auth/nginx", "/envoy/x"] {
        let started = Instant::now();
        let response = app
            .client
            .get(app.url(path))
            .header("X-Forwarded-Uri", "/x")
            .header("X-Original-URI", "/x")
            .header("Authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        answers.push((
            path,
            response.status().as_u16(),
            retry_after(&response),
            started.elapsed(),
        ));
    }
    answers
}

fn assert_unavailable_everywhere(answers: &[(&str, u16, Option<u64>, Duration)]) {
    for (path, status, retry_after, took) in answers {
        let expected = if *path == "/auth" { 503 } else { 401 };
        assert_eq!(*status, expected, "{path}");
        assert!(
            retry_after.is_some_and(|s| s > 0),
            "{path} without Retry-After"
        );
        assert!(*took < Duration::from_secs(1), "{path} took {took:?}");
    }
}

#[tokio::test]
async fn with_the_idp_unreachable_at_start_the_service_is_live_not_ready_and_fails_closed_fast() {
    let idp = TestIdp::start().await;
    let (issuer, key, claims) = (idp.issuer(), idp.current_key(), idp.valid_claims("alice"));
    idp.close().await;
    let token = key.sign_jwt(&claims).unwrap();
    let app = App::start(&config(&issuer, FAST_KEYS)).await;

    assert_eq!(app.healthz().await, 200);
    assert_eq!(app.readyz().await, 503);
    assert_unavailable_everywhere(&every_mouth(&app, &token).await);
    assert_eq!(app.readyz().await, 503);
}

#[tokio::test]
async fn an_idp_down_at_start_is_retried_until_it_comes_up() {
    let idp = TestIdp::start().await;
    idp.set_down(true);
    let token = idp.mint(idp.valid_claims("alice"));
    let app = App::start(&config(&idp.issuer(), FAST_KEYS)).await;

    assert_unavailable_everywhere(&every_mouth(&app, &token).await);
    assert_eq!(app.readyz().await, 503);
    assert!(
        eventually(Duration::from_secs(3), || async {
            idp.discovery_fetches() >= 3
        })
        .await,
        "no retries with backoff"
    );
    assert_eq!(app.readyz().await, 503);

    idp.set_down(false);
    assert!(
        app.wait_ready(Duration::from_secs(3)).await,
        "did not recover"
    );
    assert_eq!(status(&app, &token).await, 200);
}

#[tokio::test]
async fn a_hanging_jwks_at_start_answers_unavailable_within_the_check_deadline() {
    let idp = TestIdp::start().await;
    idp.set_delay(Duration::from_secs(2));
    let token = idp.mint(idp.valid_claims("alice"));
    let app = App::start(&config(
        &idp.issuer(),
        "limits: {check_deadline: 150ms}\nkeys: {fetch_timeout: 3s}",
    ))
    .await;

    assert_unavailable_everywhere(&every_mouth(&app, &token).await);
    assert_eq!(
        idp.jwks_fetches(),
        1,
        "checks wait for the first fetch, never add one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_checks_at_a_cold_start_share_one_discovery_and_one_jwks_fetch() {
    let delay = Duration::from_secs(1);
    let idp = TestIdp::start().await;
    // A slow JWKS keeps the first fetch in flight while the checks arrive (each on its own
    // connection: 2,000 descriptors with the server side, under the 20,000 limit). The default
    // limit of 1,024 concurrent checks admits them all.
    idp.set_delay(delay);
    let token = idp.mint(idp.valid_claims("alice"));
    let app = App::start(&config(&idp.issuer(), "limits: {check_deadline: 8s}")).await;

    let started = Instant::now();
    let answers = tokio::time::timeout(
        Duration::from_secs(10),
        concurrent_timed_checks(&app, &token, 1000),
    )
    .await
    .expect("1,000 checks answered within 10 s");
    let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!((idp.discovery_fetches(), idp.jwks_fetches()), (1, 1));
    // Checks sent before the JWKS answered waited for it, instead of fetching or failing.
    let waited = answers
        .iter()
        .filter(|(_, sent_at)| *sent_at < delay / 2)
        .count();
    assert!(waited > 0, "no check arrived during the first fetch");
    assert!(
        started.elapsed() >= delay,
        "answered before the JWKS was served"
    );
}

#[tokio::test]
async fn a_slow_refetch_answers_unavailable_at_the_deadline_and_completes_in_the_background() {
    let idp = TestIdp::start().await;
    let app = App::start(&config(&idp.issuer(), "limits: {check_deadline: 150ms}")).await;
    assert!(app.wait_ready(READY_LIMIT).await, "never ready");
    idp.set_delay(Duration::from_millis(700));
    idp.rotate(Alg::ES256);
    let token = idp.mint(idp.valid_claims("alice"));

    let started = Instant::now();
    let response = app.check(Some(&token)).await;
    let took = started.elapsed();
    assert_eq!(response.status(), 503);
    assert!(retry_after(&response).is_some_and(|s| s > 0));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let metrics = app.metrics().await;
    assert!(
        metric(
            &metrics,
            r#"authgate_decisions_total{frontend="forward_auth",result="deny",reason="deadline_exceeded"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );

    assert!(
        eventually(Duration::from_secs(3), || async {
            status(&app, &token).await == 200
        })
        .await,
        "the background fetch never completed"
    );
    assert_eq!(
        idp.jwks_fetches(),
        2,
        "the abandoned fetch was the one that completed"
    );
}

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_is_never_trusted() {
    let idp = TestIdp::start().await;
    // Only a trailing slash apart: the match must be exact.
    idp.set_discovery_issuer(Some(format!("{}/", idp.issuer())));
    let token = idp.mint(idp.valid_claims("alice"));
    let app = App::start(&config(&idp.issuer(), FAST_KEYS)).await;

    assert!(
        eventually(Duration::from_secs(3), || async {
            idp.discovery_fetches() >= 2
        })
        .await,
        "discovery was not retried"
    );
    assert_eq!(app.readyz().await, 503);
    let response = app.check(Some(&token)).await;
    assert_eq!(response.status(), 503);
    assert!(retry_after(&response).is_some());
    assert_eq!(
        idp.jwks_fetches(),
        0,
        "the JWKS of a mismatching document is never fetched"
    );
}

#[tokio::test]
async fn jwks_faults_after_start_keep_the_last_good_key_set() {
    let idp = TestIdp::start().await;
    let elsewhere = TestIdp::start().await;
    idp.set_cache_control(Some("max-age=1".to_owned()));
    let keys = "keys: {min_ttl: 1s, retry_initial: 50ms, retry_max: 200ms, max_body_bytes: 4096}";
    let app = App::start(&config(&idp.issuer(), keys)).await;
    assert!(app.wait_ready(READY_LIMIT).await, "never ready");
    let token = idp.mint(idp.valid_claims("alice"));
    let issuer = idp.issuer();
    let fetches_with = |result: &str, metrics: &str| {
        metric(
            metrics,
            &format!(r#"authgate_jwks_fetches_total{{issuer="{issuer}",result="{result}"}}"#),
        )
        .unwrap_or(0.0)
    };

    let faults = [
        (Fault::Status(500), "http_error"),
        // `elsewhere` serves its own k1: following the redirect would break the real k1.
        (Fault::Redirect(elsewhere.jwks_uri()), "http_error"),
        (Fault::MalformedJson, "bad_jwks"),
        (Fault::WrongShape, "bad_jwks"),
        (Fault::HugeBody(8192), "too_large"),
        (Fault::EndlessBody, "too_large"),
        // Last: a 404 drops the discovered URL, so the fetches after it ask discovery again.
        (Fault::Status(404), "http_error"),
    ];
    for (fault, label) in faults {
        let failed_before = fetches_with(label, &app.metrics().await);
        idp.set_jwks_fault(fault.clone());
        let seen = idp.jwks_fetches();
        // Fetches are serial: the second arrival means the first faulty answer was applied.
        assert!(
            eventually(Duration::from_secs(5), || async {
                idp.jwks_fetches() >= seen + 2
            })
            .await,
            "{fault:?}: no refresh attempted"
        );
        assert!(
            fetches_with(label, &app.metrics().await) > failed_before,
            "{fault:?} not counted as {label}"
        );
        assert_eq!(
            status(&app, &token).await,
            200,
            "{fault:?}: known kid denied"
        );
        assert_eq!(app.readyz().await, 200, "{fault:?}: not ready");
        if fault == Fault::Status(404) {
            assert!(idp.discovery_fetches() > 1, "no discovery after a 404");
        } else {
            assert_eq!(
                idp.discovery_fetches(),
                1,
                "{fault:?}: the URL was not kept"
            );
        }
    }
    assert_eq!(
        (elsewhere.discovery_fetches(), elsewhere.jwks_fetches()),
        (0, 0),
        "a redirect was followed"
    );
}

#[tokio::test]
async fn a_key_removed_at_the_idp_is_dropped_at_the_next_scheduled_refresh() {
    let idp = TestIdp::start().await;
    idp.set_cache_control(Some("max-age=1".to_owned()));
    let app = App::start(&config(&idp.issuer(), FAST_KEYS)).await;
    assert!(app.wait_ready(READY_LIMIT).await, "never ready");
    let old = idp.mint(idp.valid_claims("alice"));
    assert_eq!(status(&app, &old).await, 200);

    idp.rotate(Alg::ES256);
    idp.remove_key("k1");
    assert_eq!(idp.published_kids(), ["k2"]);
    let new = idp.mint(idp.valid_claims("bob"));
    let fetches = idp.jwks_fetches();
    assert!(
        eventually(Duration::from_secs(5), || async {
            status(&app, &old).await == 401
        })
        .await,
        "the removed key still verifies"
    );
    assert!(idp.jwks_fetches() > fetches);
    let response = app.check(Some(&old)).await;
    assert_eq!(response.status(), 401);
    assert!(header(&response, "www-authenticate").is_some_and(|c| c.contains("invalid_token")));
    assert_eq!(status(&app, &new).await, 200);
}

#[tokio::test]
async fn a_duplicate_kid_is_ambiguous_and_oct_or_encryption_keys_are_never_used() {
    let idp = TestIdp::start().await;
    let twin = SigningKey::generate(Alg::ES256, "twin").unwrap();
    let other = SigningKey::generate(Alg::ES256, "other").unwrap();
    let enc = SigningKey::generate(Alg::ES256, "enc").unwrap();
    let renamed = |key: &SigningKey, kid: &str| {
        let mut jwk = key.public_jwk();
        jwk["kid"] = Value::from(kid);
        jwk
    };
    let mut enc_jwk = enc.public_jwk();
    enc_jwk["use"] = Value::from("enc");
    let secret = b"an-attacker-knows-this-published-secret";
    let oct = json!({
        "kty": "oct", "kid": "hs", "alg": "HS256",
        "k": base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, secret),
    });
    idp.set_raw_jwks(Some(json!({"keys": [
        renamed(&idp.current_key(), "twin"),
        twin.public_jwk(),
        other.public_jwk(),
        enc_jwk,
        oct,
    ]})));
    let app = App::start(&config(&idp.issuer(), FAST_KEYS)).await;
    assert!(app.wait_ready(READY_LIMIT).await, "never ready");
    let claims = idp.valid_claims("alice");
    let issuer = idp.issuer();
    assert_eq!(
        metric(
            &app.metrics().await,
            &format!(r#"authgate_keys_loaded{{issuer="{issuer}"}}"#)
        ),
        Some(3.0),
        "the twins and other loaded, enc and oct skipped"
    );
    // Only this test denies for these two reasons in this binary: their deltas are its own.
    let denied_for = |reason: &str, metrics: &str| {
        metric(
            metrics,
            &format!(
                r#"authgate_decisions_total{{frontend="forward_auth",result="deny",reason="{reason}"}}"#
            ),
        )
        .unwrap_or(0.0)
    };
    let before = app.metrics().await;

    let other_token = other.sign_jwt(&claims).unwrap();
    assert_eq!(status(&app, &other_token).await, 200, "the other keys work");
    // Either twin would verify its own token; neither may, since the kid is ambiguous.
    for token in [
        token_with_kid(&idp, "twin"),
        twin.sign_jwt(&claims).unwrap(),
    ] {
        assert_eq!(status(&app, &token).await, 401, "ambiguous kid allowed");
    }
    let after = app.metrics().await;
    assert_eq!(
        denied_for("ambiguous_key", &after) - denied_for("ambiguous_key", &before),
        2.0
    );
    assert_eq!(idp.jwks_fetches(), 1, "an ambiguous kid is not refetched");

    // The enc key was skipped: its kid is unknown, which costs one refetch.
    assert_eq!(
        status(&app, &enc.sign_jwt(&claims).unwrap()).await,
        401,
        "use: enc key used"
    );
    assert_eq!(idp.jwks_fetches(), 2);
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some("hs".to_owned());
    let hs_token = jsonwebtoken::encode(
        &hs_header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap();
    assert_eq!(status(&app, &hs_token).await, 401, "oct key used");
    // HS256 is refused before any key is looked at.
    assert_eq!(
        denied_for("algorithm_not_allowed", &app.metrics().await)
            - denied_for("algorithm_not_allowed", &after),
        1.0
    );
    assert_eq!(idp.jwks_fetches(), 2);
    assert_eq!(status(&app, &other_token).await, 200);
}

#[tokio::test]
async fn a_healthy_idp_keeps_the_service_ready_when_max_stale_is_shorter_than_the_ttl() {
    let idp = TestIdp::start().await;
    // No Cache-Control: the set lives for the default 10 min, far beyond max_stale.
    let app = App::start(&config(&idp.issuer(), "keys: {max_stale: 1s}")).await;
    assert!(app.wait_ready(READY_LIMIT).await, "never ready");
    let token = idp.mint(idp.valid_claims("alice"));

    let watched = Instant::now();
    while watched.elapsed() < Duration::from_millis(2500) {
        assert_eq!(
            app.readyz().await,
            200,
            "not ready {:?} after start with a healthy IdP",
            watched.elapsed()
        );
        assert_eq!(status(&app, &token).await, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        idp.jwks_fetches() >= 3,
        "refreshed {} times",
        idp.jwks_fetches()
    );
}

#[tokio::test]
async fn a_scheduled_refresh_does_not_start_the_unknown_kid_cooldown() {
    let idp = TestIdp::start().await;
    idp.set_cache_control(Some("max-age=1".to_owned()));
    // The default 30 s cooldown: had a refresh started it, the new kid would wait that long.
    let keys = "keys: {min_ttl: 1s, retry_initial: 50ms, retry_max: 200ms}";
    let app = App::start(&config(&idp.issuer(), keys)).await;
    assert!(app.wait_ready(READY_LIMIT).await, "never ready");
    assert!(
        eventually(Duration::from_secs(3), || async { idp.jwks_fetches() >= 2 }).await,
        "no scheduled refresh"
    );

    idp.rotate(Alg::ES256);
    let token = idp.mint(idp.valid_claims("alice"));
    assert_eq!(
        status(&app, &token).await,
        200,
        "the new kid was not refetched"
    );
}
