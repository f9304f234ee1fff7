//! Overload over real sockets: checks over the concurrency limit shed as unavailable denies (gRPC
//! here; HTTP in http_endpoints.rs), clients that send headers slowly or not at all cut off at
//! the header timeout, connections over `limits.max_connections` held back until one closes, and
//! a stop under load that answers every check it accepted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use authgate::verify::Alg;
use common::app::App;
use common::envoy::envoy_check;
use common::idp::TestIdp;
use common::metrics::metric_sum;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The metrics recorder is process-wide: tests here take turns so counts and gauges are theirs.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(idp: &TestIdp, extra: &str) -> String {
    format!(
        "issuers: [{{issuer: \"{}\"}}]\naudiences: [authgate-test]\n{extra}\n",
        idp.issuer()
    )
}

/// Envoy's Check for `GET /items` with this bearer token.
fn grpc_check(token: &str) -> CheckRequest {
    envoy_check("/items", &[format!("Bearer {token}").into_bytes()])
}

/// gRPC code, denied HTTP status and `retry-after` of a CheckResponse.
fn grpc_answer(response: &CheckResponse) -> (i32, u16, Option<String>) {
    let code = response.status.as_ref().map_or(0, |s| s.code);
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(d)) => {
            let status = d
                .status
                .as_ref()
                .map_or(0, |s| u16::try_from(s.code).unwrap());
            let retry_after = d
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .find(|h| h.key == "retry-after")
                .map(|h| h.value.clone());
            (code, status, retry_after)
        }
        _ => (code, 200, None),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_checks_over_the_concurrency_limit_are_unavailable_denies_at_once_and_counted() {
    let _serial = SERIAL.lock().await;
    let idp = TestIdp::start().await;
    // A cold start with a slow JWKS: the one admitted check holds its permit while it waits.
    idp.set_delay(Duration::from_millis(800));
    let token = idp.mint(idp.valid_claims("alice"));
    let app = App::start(&config(
        &idp,
        "limits: {max_concurrent_checks: 1, check_deadline: 5s}",
    ))
    .await;
    let channel = app.grpc_channel().await;
    let mut checks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let mut client = AuthorizationClient::new(channel.clone());
        let request = grpc_check(&token);
        checks.spawn(async move {
            let started = Instant::now();
            let response = client
                .check(request)
                .await
                .expect("an RPC answer, not an error");
            (grpc_answer(response.get_ref()), started.elapsed())
        });
    }
    let answers = checks.join_all().await;
    let allowed = answers.iter().filter(|(a, _)| a.0 == 0).count();
    let shed: Vec<_> = answers.iter().filter(|(a, _)| a.0 == 14).collect();
    assert_eq!(allowed + shed.len(), answers.len(), "{answers:?}");
    assert!(allowed >= 1 && !shed.is_empty(), "{answers:?}");
    for ((_, status, retry_after), took) in shed {
        assert_eq!(*status, 503);
        assert_eq!(
            retry_after.as_deref(),
            Some("1"),
            "shed without Retry-After: 1"
        );
        assert!(
            *took < Duration::from_millis(500),
            "shed after {took:?}: queued"
        );
    }
    let metrics = app.metrics().await;
    let counted = metric_sum(&metrics, "authgate_checks_shed_total{frontend=\"grpc\"}");
    assert_eq!(counted, (answers.len() - allowed) as f64, "{metrics}");
}

/// Reads until the server closes the connection (or `limit` passes): what it sent, and when.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<(Vec<u8>, Duration)> {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let remaining = limit.checked_sub(started.elapsed())?;
        match tokio::time::timeout(remaining, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some((seen, started.elapsed())),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn clients_that_send_headers_slowly_or_never_are_cut_off_at_the_header_timeout() {
    let _serial = SERIAL.lock().await;
    let idp = TestIdp::start().await;
    let app = App::start(&config(&idp, "limits: {header_read_timeout: 1s}")).await;
    assert!(app.wait_ready(Duration::from_secs(5)).await);
    let token = idp.mint(idp.valid_claims("alice"));

    // Silent: connects and sends nothing.
    let mut silent = TcpStream::connect(app.http).await.unwrap();
    // Slowloris: a request line, then one header byte every 200 ms, never finishing.
    let mut slow = TcpStream::connect(app.http).await.unwrap();
    slow.write_all(b"GET /auth HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..50 {
            if slow.write_all(b"X").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        slow
    });
    // Meanwhile the port serves everyone else.
    assert_eq!(app.check(Some(&token)).await.status(), 200);

    let (sent, after) = read_until_closed(&mut silent, Duration::from_secs(4))
        .await
        .expect("a silent connection stayed open past 4 s");
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );
    assert!(
        sent.is_empty() || sent.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&sent)
    );

    let mut slow = tokio::time::timeout(Duration::from_secs(15), trickle)
        .await
        .expect("the trickle never ended")
        .unwrap();
    let (sent, _) = read_until_closed(&mut slow, Duration::from_secs(1))
        .await
        .expect("the slow connection is still open");
    assert!(
        sent.is_empty() || sent.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&sent)
    );
    // The loop above stops writing at the first failed write; well before 50 x 200 ms.
    assert_eq!(app.check(Some(&token)).await.status(), 200);
}

#[tokio::test]
async fn a_slow_trickle_is_closed_within_the_header_timeout_not_per_byte() {
    let _serial = SERIAL.lock().await;
    let idp = TestIdp::start().await;
    let app = App::start(&config(&idp, "limits: {header_read_timeout: 1s}")).await;
    let mut slow = TcpStream::connect(app.http).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /auth HTTP/1.1\r\n").await.unwrap();
    let mut closed_after = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow.write_all(b"X-A: b\r\n").await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut probe = [0u8; 64];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await
        {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("a header trickle kept the connection for 4 s");
    assert!(
        closed_after < Duration::from_millis(2500),
        "closed only after {closed_after:?}"
    );
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_one_closes() {
    let _serial = SERIAL.lock().await;
    let idp = TestIdp::start().await;
    let app = App::start(&config(
        &idp,
        "limits: {max_connections: 2, header_read_timeout: 10s}",
    ))
    .await;
    assert!(app.wait_ready(Duration::from_secs(5)).await);
    let token = idp.mint(idp.valid_claims("alice"));
    let request = format!(
        "GET /auth HTTP/1.1\r\nHost: a\r\nX-Forwarded-Uri: /items\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );

    // The gauge is process-wide in tests (every App here shares one recorder): count from a
    // baseline, with the other tests of this file held off.
    let open =
        |metrics: String| metric_sum(&metrics, "authgate_open_connections{listener=\"http\"}");
    let baseline = open(app.metrics().await);
    let hold_a = TcpStream::connect(app.http).await.unwrap();
    let hold_b = TcpStream::connect(app.http).await.unwrap();
    assert!(
        common::app::eventually(Duration::from_secs(2), || async {
            open(app.metrics().await) == baseline + 2.0
        })
        .await,
        "two held connections not counted"
    );

    // The third connects (the kernel's backlog) but is not served while two are open.
    let mut third = TcpStream::connect(app.http).await.unwrap();
    third.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let early = tokio::time::timeout(Duration::from_millis(500), third.read_to_end(&mut buf)).await;
    assert!(
        early.is_err(),
        "served over the cap: {:?}",
        String::from_utf8_lossy(&buf)
    );

    // Admin has its own cap: metrics and probes still answer.
    assert_eq!(app.readyz().await, 200);

    drop(hold_a);
    let answered = tokio::time::timeout(Duration::from_secs(3), third.read_to_end(&mut buf))
        .await
        .expect("not served after a slot freed")
        .unwrap();
    assert!(answered > 0);
    assert!(
        buf.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    drop(hold_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_under_load_answers_every_check_it_accepted_with_zero_errors() {
    let _serial = SERIAL.lock().await;
    let idp = TestIdp::start().await;
    let mut app = App::start(&config(
        &idp,
        "limits: {check_deadline: 5s}\nshutdown: {grace: 2s, drain_timeout: 5s}",
    ))
    .await;
    assert!(app.wait_ready(Duration::from_secs(5)).await);
    let token = idp.mint(idp.valid_claims("alice"));
    let channel = app.grpc_channel().await;

    // Steady load on both mouths until the load balancer would have stopped sending: most of
    // the grace period after the stop.
    let sending = Arc::new(AtomicBool::new(true));
    let (ok, errors) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (sending, ok, errors) = (sending.clone(), ok.clone(), errors.clone());
        let (client, url, token) = (app.client.clone(), app.url("/auth"), token.clone());
        let mut grpc = AuthorizationClient::new(channel.clone());
        load.spawn(async move {
            while sending.load(Ordering::SeqCst) {
                let answer = if i % 2 == 0 {
                    client
                        .get(&url)
                        .header("X-Forwarded-Uri", "/items")
                        .header("Authorization", format!("Bearer {token}"))
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .map_err(|e| format!("{e:?}"))
                } else {
                    grpc.check(grpc_check(&token))
                        .await
                        .map(|r| grpc_answer(r.get_ref()).1)
                        .map_err(|s| s.to_string())
                };
                let good = answer == Ok(200);
                let counter = if good { &ok } else { &errors };
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = tokio::time::Instant::now();
    app.begin_stop();

    // Draining: HTTP/1 answers close their connection, so keep-alive pools empty in time.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let during = app.check(Some(&token)).await;
    assert_eq!(during.status(), 200);
    assert_eq!(
        during
            .headers()
            .get("connection")
            .and_then(|v| v.to_str().ok()),
        Some("close")
    );

    // In flight when the listeners close: a rotated key (EC: made at once) makes these wait on
    // a 2 s JWKS fetch that starts 0.5 s into the 2 s grace period (slack for a slow machine).
    tokio::time::sleep_until(stopped + Duration::from_millis(500)).await;
    idp.set_delay(Duration::from_secs(2));
    idp.rotate(Alg::ES256);
    let fresh = idp.mint(idp.valid_claims("bob"));
    let mut in_flight = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (client, url, fresh) = (app.client.clone(), app.url("/auth"), fresh.clone());
        let mut grpc = AuthorizationClient::new(channel.clone());
        in_flight.spawn(async move {
            if i % 2 == 0 {
                let r = client
                    .get(&url)
                    .header("X-Forwarded-Uri", "/items")
                    .header("Authorization", format!("Bearer {fresh}"))
                    .send()
                    .await;
                r.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
            } else {
                grpc.check(grpc_check(&fresh))
                    .await
                    .map(|r| grpc_answer(r.get_ref()).1)
                    .map_err(|s| s.to_string())
            }
        });
    }
    // The load balancer has stopped sending well before the grace period ends.
    tokio::time::sleep_until(stopped + Duration::from_millis(1200)).await;
    sending.store(false, Ordering::SeqCst);
    load.join_all().await;

    let answers = in_flight.join_all().await;
    let finished = stopped.elapsed();
    assert!(
        finished > Duration::from_millis(2100),
        "the in-flight checks ended at {finished:?}, before their key fetch could"
    );
    assert_eq!(
        answers,
        vec![Ok(200); 10],
        "in-flight checks across the close"
    );
    assert_eq!(
        errors.load(Ordering::SeqCst),
        0,
        "errors under load during the grace period"
    );
    assert!(
        ok.load(Ordering::SeqCst) > 50,
        "too little load to mean anything"
    );
    let http = app.http;
    tokio::time::timeout(Duration::from_secs(10), app.join())
        .await
        .expect("run did not return")
        .expect("run failed");
    assert!(TcpStream::connect(http).await.is_err(), "still listening");
}

#[tokio::test]
async fn a_silent_grpc_connection_and_an_idle_keep_alive_connection_are_closed_at_the_header_timeout()
 {
    let _serial = SERIAL.lock().await;
    let idp = TestIdp::start().await;
    let app = App::start(&config(&idp, "limits: {header_read_timeout: 1s}")).await;
    assert!(app.wait_ready(Duration::from_secs(5)).await);
    let token = idp.mint(idp.valid_claims("alice"));

    let mut silent_grpc = TcpStream::connect(app.grpc).await.unwrap();
    let (_, after) = read_until_closed(&mut silent_grpc, Duration::from_secs(4))
        .await
        .expect("a silent gRPC connection stayed open past 4 s");
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );

    // One request on a keep-alive connection, then silence: hyper waits for the next request
    // head no longer than the header timeout either.
    let mut kept = TcpStream::connect(app.http).await.unwrap();
    let request = format!(
        "GET /auth HTTP/1.1\r\nHost: a\r\nX-Forwarded-Uri: /items\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    kept.write_all(request.as_bytes()).await.unwrap();
    let (sent, after) = read_until_closed(&mut kept, Duration::from_secs(5))
        .await
        .expect("an idle keep-alive connection stayed open past 5 s");
    assert!(
        sent.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&sent)
    );
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_millis(3000),
        "closed {after:?} after the request"
    );
}

#[tokio::test]
async fn a_keep_alive_connection_in_use_and_an_idle_http2_connection_outlive_the_header_timeout() {
    let _serial = SERIAL.lock().await;
    let idp = TestIdp::start().await;
    let app = App::start(&config(&idp, "limits: {header_read_timeout: 1s}")).await;
    assert!(app.wait_ready(Duration::from_secs(5)).await);
    let token = idp.mint(idp.valid_claims("alice"));

    // Requests every 300 ms for 3 s on one connection: the timeout is per request head, not
    // per connection, so every one is answered on the same connection.
    let mut kept = TcpStream::connect(app.http).await.unwrap();
    let request = format!("GET /auth HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\r\n");
    for i in 0..10 {
        kept.write_all(request.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), kept.read(&mut answer))
            .await
            .expect("no answer within 2 s")
            .unwrap();
        assert!(
            answer[..n].starts_with(b"HTTP/1.1 200"),
            "request {i}: {:?}",
            String::from_utf8_lossy(&answer[..n])
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // An HTTP/2 (prior knowledge) connection to the HTTP port that sends the preface and its
    // settings, then nothing: HTTP/2 keeps its own connection, the header timeout covers only
    // its first bytes.
    let mut h2 = TcpStream::connect(app.http).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut settings = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(2), h2.read(&mut settings))
        .await
        .expect("no HTTP/2 settings within 2 s")
        .unwrap();
    assert!(
        n >= 9 && settings[3] == 4,
        "not a SETTINGS frame: {:?}",
        &settings[..n]
    );
    // SETTINGS ACK.
    h2.write_all(b"\0\0\0\x04\x01\0\0\0\0").await.unwrap();
    let mut rest = Vec::new();
    let idle = tokio::time::timeout(Duration::from_millis(2500), h2.read_to_end(&mut rest)).await;
    assert!(
        idle.is_err(),
        "the idle HTTP/2 connection was closed: {idle:?} {rest:?}"
    );
}
