//! Two-phase shutdown over real sockets: once stop is triggered, `/readyz` turns 503 at once
//! while checks are still answered through the grace period; then `run` returns and the ports
//! close.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use std::time::{Duration, Instant};

use common::app::{App, eventually};
use common::idp::TestIdp;

const GRACE: Duration = Duration::from_secs(1);

#[tokio::test]
async fn stopping_turns_readiness_off_at_once_and_keeps_answering_checks_through_the_grace_period()
{
    let idp = TestIdp::start().await;
    let yaml = format!(
        "issuers: [{{issuer: \"{}\"}}]\naudiences: [authgate-test]\nshutdown: {{grace: 1s, drain_timeout: 2s}}\n",
        idp.issuer()
    );
    let mut app = App::start(&yaml).await;
    assert!(app.wait_ready(Duration::from_secs(5)).await, "never ready");
    let token = idp.mint(idp.valid_claims("alice"));
    assert_eq!(app.check(Some(&token)).await.status(), 200);
    let (http, client) = (app.http, app.client.clone());

    let stopped_at = Instant::now();
    app.begin_stop();
    assert!(
        eventually(Duration::from_millis(500), || async {
            app.readyz().await == 503
        })
        .await,
        "still ready after stop"
    );
    let response = app.check(Some(&token)).await;
    assert_eq!(
        response.status(),
        200,
        "checks are answered during the grace period"
    );
    assert_eq!(
        response
            .headers()
            .get("x-auth-subject")
            .and_then(|v| v.to_str().ok()),
        Some("alice")
    );
    assert_eq!(app.check(None).await.status(), 401);
    assert!(
        stopped_at.elapsed() < GRACE,
        "the checks above ran past the grace period"
    );

    tokio::time::timeout(Duration::from_secs(5), app.join())
        .await
        .expect("run did not return after grace and drain")
        .expect("run failed");
    assert!(
        stopped_at.elapsed() >= GRACE,
        "run returned after {:?}, before the grace period ended",
        stopped_at.elapsed()
    );
    let refused = client
        .get(format!("http://{http}/auth"))
        .send()
        .await
        .is_err();
    assert!(
        refused,
        "the forward-auth port still answers after run returned"
    );
}
