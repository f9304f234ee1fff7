//! The IdP fault matrix over real sockets, each fault driven by the test IdP: what a check
//! answers (status, deny reason), what the IdP sees (fetches, abandoned requests, body bytes) and
//! what is logged. Timeouts and cooldowns are configured short, so a "30 s" IdP costs a second.
//!
//! Deny reasons come from the `check denied` debug log, captured here: every check of a test is
//! sent with a path of its own, so a test reads its own reasons even though the
//! `authgate_decisions_total` counters are shared by all tests in this binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use authgate::demo::signing::SigningKey;
use authgate::verify::Alg;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::app::{App, eventually};
use common::idp::{Fault, TestIdp, bulk_jwks};
use serde_json::{Value, json};
use tokio::task::JoinSet;

/// How long a test waits for the first key fetch.
const READY_LIMIT: Duration = Duration::from_secs(5);

/// Most body bytes the IdP may have sent when a fetch is cut off at the 1 MiB cap: what the client
/// read, plus what the socket buffers held when it hung up (loopback autotuning may grow the
/// receive buffer to 16 MiB here). Far below the 100 MB and 200 MB bodies on offer.
const CUT_OFF: usize = 32 << 20;

fn config(issuer: &str, extra: &str) -> String {
    format!("issuers: [{{issuer: \"{issuer}\"}}]\naudiences: [authgate-test]\n{extra}\n")
}

/// Log lines of this test binary, one JSON object each.
static LOG: Mutex<Vec<Value>> = Mutex::new(Vec::new());

/// Collects authgate's logs (debug and up) into [`LOG`]; idempotent.
fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter("authgate=debug")
            .with_writer(|| LogLine(Vec::new()))
            .try_init();
    });
}

/// One formatted event, parsed into [`LOG`] when the formatter is done with it.
struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if let Ok(line) = serde_json::from_slice::<Value>(&self.0) {
            LOG.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    }
}

/// The captured log lines for which `keep` holds.
fn logged(keep: impl Fn(&Value) -> bool) -> Vec<Value> {
    LOG.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|line| keep(line))
        .cloned()
        .collect()
}

/// The deny reasons logged for checks sent to `/{tag}`, in order.
fn deny_reasons(tag: &str) -> Vec<String> {
    let path = format!("/{tag}");
    logged(|line| line["message"] == "check denied" && line["path"] == path.as_str())
        .iter()
        .map(|line| line["reason"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// The `error` of every failed key fetch logged for `issuer`.
fn fetch_errors(issuer: &str) -> Vec<String> {
    logged(|line| line["issuer"] == issuer && line["level"] == "WARN")
        .iter()
        .map(|line| line["error"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// What one check answered.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: bool,
    took: Duration,
}

/// `GET /auth` for an original request to `/{tag}` with this bearer token.
async fn check(app: &App, tag: &str, token: &str) -> Answer {
    let started = Instant::now();
    let response = app
        .client
        .get(app.url("/auth"))
        .header("X-Forwarded-Method", "GET")
        .header("X-Forwarded-Host", "api.example.com")
        .header("X-Forwarded-Uri", format!("/{tag}"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("check request");
    Answer {
        status: response.status().as_u16(),
        retry_after: response.headers().contains_key("retry-after"),
        took: started.elapsed(),
    }
}

/// `token` with its header swapped for one naming `kid` (same `alg`). The signature no longer
/// matches, which does not matter for a kid that is never found: tokens for a flood of random
/// kids cost no signing.
fn with_kid(token: &str, kid: &str) -> String {
    let (_, rest) = token.split_once('.').expect("a compact JWS");
    let header = json!({"alg": "RS256", "typ": "at+jwt", "kid": kid});
    format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()))
}

/// A token signed by `key` whose header names `kid` instead of the key's own.
fn signed_with_kid(idp: &TestIdp, key: &SigningKey, kid: &str) -> String {
    idp.mint_with(
        key,
        json!({"alg": key.alg().as_str(), "typ": "at+jwt", "kid": kid}),
        idp.valid_claims("alice"),
    )
}

/// The value of one exact metric line (`name{labels}`), zero when absent.
fn metric(text: &str, series: &str) -> f64 {
    common::metrics::metric(text, series).unwrap_or(0.0)
}

/// `authgate_jwks_fetches_total` of `issuer` with this `result`; per issuer, so each test owns its
/// series.
async fn fetches_with(app: &App, issuer: &str, result: &str) -> f64 {
    metric(
        &app.metrics().await,
        &format!(r#"authgate_jwks_fetches_total{{issuer="{issuer}",result="{result}"}}"#),
    )
}

#[tokio::test]
async fn a_jwks_answering_in_30s_is_abandoned_at_the_fetch_timeout_while_cached_keys_serve() {
    capture_logs();
    let tag = "slow-jwks";
    let cooldown = Duration::from_secs(2);
    let idp = TestIdp::start().await;
    // No Cache-Control: the set lives 10 min, so every fetch below is an unknown-kid refetch.
    let keys = "keys: {fetch_timeout: 500ms, unknown_kid_cooldown: 2s}";
    let app = App::start(&config(&idp.issuer(), keys)).await;
    assert!(app.wait_ready(READY_LIMIT).await, "never ready");
    let old = idp.mint(idp.valid_claims("alice"));

    idp.set_delay(Duration::from_secs(30));
    idp.rotate(Alg::ES256);
    let new = idp.mint(idp.valid_claims("bob"));
    let started = Instant::now();
    // The new kid starts a refetch that hangs: the check gives up at its 150 ms deadline.
    let answer = check(&app, tag, &new).await;
    assert_eq!((answer.status, answer.retry_after), (503, true));
    assert!(answer.took < Duration::from_secs(1), "{answer:?}");
    // A known kid is answered from the cache meanwhile.
    let answer = check(&app, tag, &old).await;
    assert_eq!(answer.status, 200);
    assert!(answer.took < Duration::from_secs(1), "{answer:?}");
    assert_eq!(idp.jwks_fetches(), 2, "the start-up fetch and the refetch");

    assert!(
        eventually(Duration::from_secs(5), || async {
            idp.jwks_abandoned() >= 1
        })
        .await,
        "the IdP never saw the hanging fetch abandoned"
    );
    let abandoned_after = started.elapsed();
    assert!(
        abandoned_after >= Duration::from_millis(450) && abandoned_after < Duration::from_secs(5),
        "abandoned after {abandoned_after:?}; the fetch timeout is 500ms"
    );
    assert_eq!(fetches_with(&app, &idp.issuer(), "timeout").await, 1.0);
    assert_eq!(app.readyz().await, 200, "the last good set keeps serving");
    assert_eq!(check(&app, tag, &old).await.status, 200);

    // The IdP answers again. The failed refetch is not retried on its own (the set is fresh):
    // until the cooldown ends the new kid is denied without a fetch, as unavailable (503: the
    // last fetch failed, so the kid may be real), then refetched once.
    idp.set_delay(Duration::ZERO);
    assert!(
        eventually(Duration::from_secs(5), || async {
            check(&app, tag, &new).await.status == 200
        })
        .await,
        "the new key never arrived once the IdP answered again"
    );
    assert!(started.elapsed() >= cooldown, "{:?}", started.elapsed());
    assert_eq!(
        idp.jwks_fetches(),
        3,
        "start-up, the abandoned refetch, one more"
    );
    let reasons = deny_reasons(tag);
    assert_eq!(reasons[0], "deadline_exceeded");
    assert!(
        reasons[1..].iter().all(|r| r == "keys_unavailable"),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_discovery_answering_in_30s_at_start_is_abandoned_and_checks_fail_closed_in_time() {
    capture_logs();
    let tag = "slow-discovery";
    let idp = TestIdp::start().await;
    idp.set_discovery_delay(Duration::from_secs(30));
    let token = idp.mint(idp.valid_claims("alice"));
    let keys = "keys: {fetch_timeout: 1s, retry_initial: 50ms, retry_max: 200ms}";
    let started = Instant::now();
    let app = App::start(&config(&idp.issuer(), keys)).await;

    // The check waits for the first fetch only until its 150 ms deadline; the fetch goes on.
    let answer = check(&app, tag, &token).await;
    assert_eq!((answer.status, answer.retry_after), (503, true));
    assert!(answer.took < Duration::from_secs(1), "{answer:?}");
    assert_eq!(
        idp.discovery_abandoned(),
        0,
        "the check that gave up cancelled the fetch"
    );
    assert_eq!(app.readyz().await, 503);

    assert!(
        eventually(Duration::from_secs(5), || async {
            idp.discovery_abandoned() >= 1
        })
        .await,
        "the IdP never saw the hanging discovery abandoned"
    );
    let abandoned_after = started.elapsed();
    assert!(
        abandoned_after >= Duration::from_millis(950) && abandoned_after < Duration::from_secs(5),
        "abandoned after {abandoned_after:?}; the fetch timeout is 1s"
    );
    assert!(
        eventually(Duration::from_secs(3), || async {
            idp.discovery_fetches() >= 2
        })
        .await,
        "discovery was not retried"
    );
    let answer = check(&app, tag, &token).await;
    assert_eq!((answer.status, answer.retry_after), (503, true));
    assert!(answer.took < Duration::from_secs(1), "{answer:?}");
    assert_eq!(app.readyz().await, 503);
    assert_eq!(idp.jwks_fetches(), 0);
    // Waiting for a hanging retry, or arriving between a timeout and the next retry.
    let reasons = deny_reasons(tag);
    assert_eq!(reasons[0], "deadline_exceeded");
    assert!(
        ["deadline_exceeded", "keys_unavailable"].contains(&reasons[1].as_str()),
        "{reasons:?}"
    );

    idp.set_discovery_delay(Duration::ZERO);
    assert!(
        app.wait_ready(Duration::from_secs(5)).await,
        "did not recover"
    );
    assert_eq!(check(&app, tag, &token).await.status, 200);
    assert_eq!(idp.jwks_fetches(), 1);
}

#[tokio::test]
async fn a_100_mb_or_endless_jwks_is_cut_off_at_the_byte_cap_and_the_last_good_set_kept() {
    capture_logs();
    let tag = "huge-jwks";
    let idp = TestIdp::start().await;
    // The default 1 MiB cap. No Cache-Control, so the only fetches are the unknown-kid refetches
    // below; a long deadline, so each check waits for its refetch to end.
    let cooldown = Duration::from_millis(200);
    let extra = "limits: {check_deadline: 5s}\nkeys: {unknown_kid_cooldown: 200ms}";
    let app = App::start(&config(&idp.issuer(), extra)).await;
    assert!(app.wait_ready(READY_LIMIT).await, "never ready");
    let old = idp.mint(idp.valid_claims("alice"));
    idp.rotate(Alg::ES256);
    let new = idp.mint(idp.valid_claims("bob"));

    for fault in [Fault::HugeBody(100 << 20), Fault::EndlessBody] {
        tokio::time::sleep(cooldown).await;
        idp.set_jwks_fault(fault.clone());
        idp.reset_fetch_counts();
        let too_large = fetches_with(&app, &idp.issuer(), "too_large").await;

        let answer = check(&app, tag, &new).await;
        // The refused set is not taken; with the fetch failed the new kid cannot be ruled
        // out, so it is unavailable (503 + Retry-After), not an invalid token.
        assert_eq!(
            answer.status, 503,
            "{fault:?}: the refused set has the new key"
        );
        assert!(
            answer.took < Duration::from_secs(3),
            "{fault:?}: {answer:?}"
        );
        assert_eq!(idp.jwks_fetches(), 1, "{fault:?}: one refetch");
        assert_eq!(
            fetches_with(&app, &idp.issuer(), "too_large").await,
            too_large + 1.0,
            "{fault:?}"
        );
        let sent = idp.largest_jwks_body_sent();
        assert!(sent < CUT_OFF, "{fault:?}: the IdP sent {sent} bytes");

        assert_eq!(check(&app, tag, &old).await.status, 200, "{fault:?}");
        assert_eq!(app.readyz().await, 200, "{fault:?}");
    }
    assert_eq!(deny_reasons(tag), ["keys_unavailable"; 2]);

    tokio::time::sleep(cooldown).await;
    idp.set_jwks_fault(Fault::None);
    assert_eq!(
        check(&app, tag, &new).await.status,
        200,
        "the new key once the JWKS fits"
    );
}

#[tokio::test]
async fn a_jwks_of_10000_keys_is_over_max_keys_and_rejected_whole() {
    capture_logs();
    let tag = "many-keys";
    let idp = TestIdp::start().await;
    let k1 = idp.current_key();
    // 10,000 RSA JWKs are about 4 MB: a cap of 8 MiB lets the key count (default 100) decide.
    let extra = "limits: {check_deadline: 5s}\n\
                 keys: {unknown_kid_cooldown: 200ms, max_body_bytes: 8388608}";
    let app = App::start(&config(&idp.issuer(), extra)).await;
    assert!(app.wait_ready(READY_LIMIT).await, "never ready");
    let old = idp.mint(idp.valid_claims("alice"));
    // Signed by k1, which every bulk-N is a copy of: it verifies if the bulk set is accepted.
    let bulk = signed_with_kid(&idp, &k1, "bulk-99");

    idp.set_raw_jwks(Some(bulk_jwks(&k1, 10_000)));
    idp.reset_fetch_counts();
    let answer = check(&app, tag, &bulk).await;
    // Not taken (not 200); the failed fetch leaves the kid unconfirmed: 503, not 401.
    assert_eq!(answer.status, 503, "a key of the oversized set was used");
    assert_eq!(idp.jwks_fetches(), 1, "one refetch");
    assert_eq!(fetches_with(&app, &idp.issuer(), "bad_jwks").await, 1.0);
    // k1 is not in the bulk set: had any of it been taken, k1 would be gone.
    assert_eq!(check(&app, tag, &old).await.status, 200);
    assert_eq!(app.readyz().await, 200);
    let errors = fetch_errors(&idp.issuer());
    assert!(
        errors
            .iter()
            .any(|e| e.contains("10000 keys, more than the cap of 100")),
        "{errors:?}"
    );

    // At the cap exactly, the set is taken (and replaces k1).
    tokio::time::sleep(Duration::from_millis(250)).await;
    idp.set_raw_jwks(Some(bulk_jwks(&k1, 100)));
    assert_eq!(check(&app, tag, &bulk).await.status, 200);
    assert_eq!(deny_reasons(tag), ["keys_unavailable"]);
    assert_eq!(idp.jwks_fetches(), 2);
}

#[tokio::test]
async fn a_jwks_of_10000_keys_at_start_is_refused_by_the_default_byte_cap() {
    capture_logs();
    let tag = "many-keys-at-start";
    let idp = TestIdp::start().await;
    let token = idp.mint(idp.valid_claims("alice"));
    idp.set_raw_jwks(Some(bulk_jwks(&idp.current_key(), 10_000)));
    let app = App::start(&config(
        &idp.issuer(),
        "keys: {retry_initial: 50ms, retry_max: 200ms}",
    ))
    .await;

    assert!(
        eventually(Duration::from_secs(5), || async {
            fetches_with(&app, &idp.issuer(), "too_large").await >= 2.0
        })
        .await,
        "the oversized set was not refused and retried"
    );
    assert_eq!(app.readyz().await, 503);
    let answer = check(&app, tag, &token).await;
    assert_eq!((answer.status, answer.retry_after), (503, true));
    assert_eq!(deny_reasons(tag), ["keys_unavailable"]);
}

#[tokio::test]
async fn one_bad_key_among_good_ones_is_skipped_and_the_good_ones_verify() {
    capture_logs();
    let tag = "one-bad-key";
    let idp = TestIdp::start().await;
    let es = SigningKey::generate(Alg::ES256, "es").unwrap();
    // First in the set, so a parser that stops at the first bad key loses the good ones.
    let broken = json!({"kty": "RSA", "kid": "broken", "use": "sig", "alg": "RS256",
        "n": "not base64url!", "e": "AQAB"});
    idp.set_raw_jwks(Some(json!({"keys": [
        broken, idp.current_key().public_jwk(), es.public_jwk(),
    ]})));
    let app = App::start(&config(&idp.issuer(), "limits: {check_deadline: 5s}")).await;
    assert!(app.wait_ready(READY_LIMIT).await, "never ready");
    let issuer = idp.issuer();
    assert_eq!(
        metric(
            &app.metrics().await,
            &format!(r#"authgate_keys_loaded{{issuer="{issuer}"}}"#)
        ),
        2.0
    );

    let claims = idp.valid_claims("alice");
    for token in [idp.mint(claims.clone()), es.sign_jwt(&claims).unwrap()] {
        assert_eq!(check(&app, tag, &token).await.status, 200);
    }
    let k1 = idp.current_key();
    let answer = check(&app, tag, &signed_with_kid(&idp, &k1, "broken")).await;
    assert_eq!(answer.status, 401);
    assert_eq!(deny_reasons(tag), ["unknown_key"]);
    assert_eq!(
        (idp.discovery_fetches(), idp.jwks_fetches()),
        (1, 2),
        "start-up, then one refetch for the kid of the skipped key"
    );
    let skipped =
        logged(|line| line["message"] == "JWK skipped" && line["issuer"] == issuer.as_str());
    assert!(
        skipped.iter().any(|line| line["kid"] == "broken"),
        "{skipped:?}"
    );
}

#[tokio::test]
async fn a_discovery_naming_another_issuer_or_an_unexpected_jwks_uri_is_never_followed() {
    capture_logs();
    // Had authgate fetched one of these URLs, `elsewhere` would have counted the request.
    let elsewhere = TestIdp::start().await;
    let port = elsewhere.issuer().rsplit(':').next().unwrap().to_owned();
    // 0.0.0.0 is not loopback, yet on Linux a connection to it reaches 127.0.0.1.
    let cases = [
        ("ftp", Some(format!("ftp://127.0.0.1:{port}/jwks")), None),
        ("file", Some("file:///etc/passwd".to_owned()), None),
        (
            "http-not-loopback",
            Some(format!("http://0.0.0.0:{port}/jwks")),
            None,
        ),
        ("issuer-mismatch", None, Some(elsewhere.issuer())),
    ];
    let mut running = Vec::new();
    for (tag, jwks_uri, issuer) in cases {
        let idp = TestIdp::start().await;
        idp.set_discovery_jwks_uri(jwks_uri);
        idp.set_discovery_issuer(issuer);
        let keys = "keys: {retry_initial: 50ms, retry_max: 200ms}";
        let app = App::start(&config(&idp.issuer(), keys)).await;
        running.push((tag, idp, app));
    }
    for (tag, idp, app) in &running {
        let refused = eventually(Duration::from_secs(5), || async {
            elsewhere.jwks_fetches() > 0
                || fetches_with(app, &idp.issuer(), "bad_discovery").await >= 2.0
        })
        .await;
        // Of all the apps, only the one sent to http://0.0.0.0 could reach `elsewhere`.
        assert_eq!(
            elsewhere.jwks_fetches(),
            0,
            "the non-loopback http jwks_uri was followed"
        );
        assert!(
            refused,
            "{tag}: not refused (and retried) as a bad discovery"
        );
        assert_eq!(app.readyz().await, 503, "{tag}");
        let answer = check(app, tag, &idp.mint(idp.valid_claims("alice"))).await;
        assert_eq!((answer.status, answer.retry_after), (503, true), "{tag}");
        assert_eq!(deny_reasons(tag), ["keys_unavailable"], "{tag}");
        assert_eq!(idp.jwks_fetches(), 0, "{tag}");
        let errors = fetch_errors(&idp.issuer());
        let expected = if *tag == "issuer-mismatch" {
            "its issuer does not equal the configured issuer"
        } else {
            "is not an https URL"
        };
        assert!(
            errors.iter().any(|error| error.contains(expected)),
            "{tag}: {errors:?}"
        );
        // The log names the rejected jwks_uri, so an operator sees what the IdP published.
        if *tag != "issuer-mismatch" {
            assert!(
                errors.iter().any(|error| error.contains("jwks_uri \"")),
                "{tag}: {errors:?}"
            );
        }
    }
    assert_eq!(
        (elsewhere.discovery_fetches(), elsewhere.jwks_fetches()),
        (0, 0)
    );
    // The URL would have reached `elsewhere`: the zero above means something.
    let reached = running[0]
        .2
        .client
        .get(format!("http://0.0.0.0:{port}/jwks"))
        .send()
        .await;
    assert!(reached.is_ok_and(|r| r.status() == 200));
    assert_eq!(elsewhere.jwks_fetches(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_random_kids_costs_at_most_one_fetch_per_cooldown() {
    capture_logs();
    let tag = "kid-flood";
    let cooldown = Duration::from_millis(500);
    let idp = TestIdp::start().await;
    let extra = "limits: {check_deadline: 2s}\nkeys: {unknown_kid_cooldown: 500ms}";
    let app = App::start(&config(&idp.issuer(), extra)).await;
    assert!(app.wait_ready(READY_LIMIT).await, "never ready");
    let app = Arc::new(app);
    let good = idp.mint(idp.valid_claims("alice"));
    let before = idp.jwks_fetches();

    // 20 senders x 100 checks, one every 20 ms each: 2,000 distinct kids over about 2 s.
    let started = Instant::now();
    let mut senders = JoinSet::new();
    for _ in 0..20 {
        let (app, good) = (Arc::clone(&app), good.clone());
        senders.spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(20));
            let mut statuses = Vec::new();
            for _ in 0..100 {
                ticks.tick().await;
                let kid = format!("{:016x}", fastrand::u64(..));
                statuses.push(check(&app, tag, &with_kid(&good, &kid)).await.status);
            }
            statuses
        });
    }
    let mut good_answers = Vec::new();
    while good_answers.len() < 10 {
        good_answers.push(check(&app, "kid-flood-good", &good).await.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let statuses: Vec<u16> = senders.join_all().await.concat();
    let elapsed = started.elapsed();

    assert_eq!(statuses.len(), 2000);
    assert!(statuses.iter().all(|&s| s == 401), "{statuses:?}");
    assert!(good_answers.iter().all(|&s| s == 200), "{good_answers:?}");
    let reasons = deny_reasons(tag);
    assert_eq!(reasons.len(), 2000);
    assert!(reasons.iter().all(|r| r == "unknown_key"));
    let fetches = idp.jwks_fetches() - before;
    let bound = 1 + usize::try_from(elapsed.as_millis() / cooldown.as_millis()).unwrap();
    assert!(
        (2..=bound).contains(&fetches),
        "{fetches} fetches in {elapsed:?} with a {cooldown:?} cooldown"
    );
    assert_eq!(idp.discovery_fetches(), 1);
}
