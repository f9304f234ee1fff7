//! Tests of the test IdP itself, so key-cache tests can trust what it serves.

// Clippy only treats `#[test]` fns as tests; the helpers below are test code too.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use std::time::{Duration, Instant};

use authgate::demo::signing::SigningKey;
use authgate::verify::Alg;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::idp::{ENDLESS_BODY_LIMIT, Fault, TEST_AUDIENCE, TestIdp, rsa_1024_jwk};
use http::{StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn fetch(url: &str) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let response = client().get(url).send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

async fn fetch_json(url: &str) -> Value {
    let (status, headers, body) = fetch(url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    serde_json::from_slice(&body).unwrap()
}

fn kids(jwks: &Value) -> Vec<&str> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_new_idp_publishes_one_rs256_key_and_a_matching_discovery_document() {
    let idp = TestIdp::start().await;
    let discovery = fetch_json(&idp.discovery_url()).await;
    assert_eq!(discovery["issuer"], idp.issuer());
    assert_eq!(discovery["jwks_uri"], idp.jwks_uri());
    let jwks = fetch_json(&idp.jwks_uri()).await;
    assert_eq!(kids(&jwks), ["k1"]);
    assert_eq!(jwks["keys"][0]["alg"], "RS256");
    assert_eq!(idp.current_key().kid(), "k1");
    assert_eq!((idp.discovery_fetches(), idp.jwks_fetches()), (1, 1));
}

#[tokio::test]
async fn minted_tokens_verify_against_the_published_jwks() {
    let idp = TestIdp::start().await;
    idp.rotate(Alg::ES256);
    let token = idp.mint(idp.valid_claims("john"));
    let jwks: JwkSet = serde_json::from_value(fetch_json(&idp.jwks_uri()).await).unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some("k2"));
    let key = DecodingKey::from_jwk(jwks.find("k2").unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[TEST_AUDIENCE]);
    validation.set_issuer(&[idp.issuer()]);
    let claims = jsonwebtoken::decode::<Value>(&token, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], "john");
}

#[tokio::test]
async fn rotate_adds_a_current_key_and_keeps_the_old_one_until_removed() {
    let idp = TestIdp::start().await;
    let kid = idp.rotate(Alg::RS256);
    assert_eq!(kid, "k2");
    assert_eq!(idp.current_key().kid(), "k2");
    assert_eq!(kids(&fetch_json(&idp.jwks_uri()).await), ["k1", "k2"]);

    idp.remove_key("k1");
    assert_eq!(kids(&fetch_json(&idp.jwks_uri()).await), ["k2"]);

    idp.add_key(SigningKey::generate(Alg::EdDSA, "next").unwrap());
    assert_eq!(idp.published_kids(), ["k2", "next"]);
    assert_eq!(
        idp.current_key().kid(),
        "k2",
        "add_key publishes without switching"
    );

    idp.remove_key("k2");
    let token = idp.mint(json!({ "sub": "x" }));
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(),
        Some("k2")
    );
    assert_eq!(kids(&fetch_json(&idp.jwks_uri()).await), ["next"]);
}

#[tokio::test]
async fn mint_with_uses_the_header_verbatim() {
    let idp = TestIdp::start().await;
    let key = idp.current_key();
    let token = idp.mint_with(&key, json!({ "alg": "none" }), json!({ "sub": "x" }));
    let header = token.split('.').next().unwrap();
    assert_eq!(
        URL_SAFE_NO_PAD.decode(header).unwrap(),
        br#"{"alg":"none"}"#
    );
}

#[tokio::test]
async fn every_request_is_counted_including_failed_ones() {
    let idp = TestIdp::start().await;
    idp.set_jwks_fault(Fault::Status(500));
    idp.set_discovery_fault(Fault::Status(404));
    for _ in 0..3 {
        fetch(&idp.jwks_uri()).await;
    }
    fetch(&idp.discovery_url()).await;
    assert_eq!((idp.jwks_fetches(), idp.discovery_fetches()), (3, 1));
    idp.reset_fetch_counts();
    assert_eq!((idp.jwks_fetches(), idp.discovery_fetches()), (0, 0));
}

#[tokio::test]
async fn faults_produce_their_status_and_bodies() {
    let idp = TestIdp::start().await;

    idp.set_jwks_fault(Fault::Status(429));
    let (status, headers, _) = fetch(&idp.jwks_uri()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");

    idp.set_jwks_fault(Fault::Redirect("http://127.0.0.1:1/elsewhere".to_owned()));
    let (status, headers, _) = fetch(&idp.jwks_uri()).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers[header::LOCATION], "http://127.0.0.1:1/elsewhere");

    for (fault, url) in [
        (Fault::MalformedJson, idp.jwks_uri()),
        (Fault::MalformedJson, idp.discovery_url()),
    ] {
        idp.set_jwks_fault(fault.clone());
        idp.set_discovery_fault(fault);
        let (status, _, body) = fetch(&url).await;
        assert_eq!(status, StatusCode::OK);
        assert!(serde_json::from_slice::<Value>(&body).is_err(), "{url}");
    }

    idp.set_jwks_fault(Fault::WrongShape);
    let jwks = fetch_json(&idp.jwks_uri()).await;
    assert!(!jwks["keys"].is_array());
    idp.set_discovery_fault(Fault::WrongShape);
    let discovery = fetch_json(&idp.discovery_url()).await;
    assert!(!discovery["issuer"].is_string());

    idp.set_jwks_fault(Fault::HugeBody(1 << 20));
    let (status, headers, body) = fetch(&idp.jwks_uri()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_LENGTH], "1048576");
    assert_eq!(body.len(), 1 << 20);
    let padded: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(kids(&padded), ["k1"], "a huge body is the real set padded");

    idp.set_jwks_fault(Fault::None);
    assert_eq!(kids(&fetch_json(&idp.jwks_uri()).await), ["k1"]);
}

#[tokio::test]
async fn an_endless_body_streams_until_the_client_gives_up() {
    let idp = TestIdp::start().await;
    idp.set_jwks_fault(Fault::EndlessBody);
    let mut response = client().get(idp.jwks_uri()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get(header::CONTENT_LENGTH).is_none());
    let mut received = 0;
    while received < 8 << 20 {
        received += response.chunk().await.unwrap().unwrap().len();
    }
    assert!(received < ENDLESS_BODY_LIMIT);
    drop(response);

    // Still serving other requests after the client hung up.
    idp.set_jwks_fault(Fault::None);
    assert_eq!(kids(&fetch_json(&idp.jwks_uri()).await), ["k1"]);
}

#[tokio::test]
async fn down_makes_every_endpoint_answer_503_until_it_is_up_again() {
    let idp = TestIdp::start().await;
    idp.set_down(true);
    assert_eq!(
        fetch(&idp.jwks_uri()).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        fetch(&idp.discovery_url()).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    idp.set_down(false);
    assert_eq!(fetch(&idp.jwks_uri()).await.0, StatusCode::OK);
    assert_eq!((idp.jwks_fetches(), idp.discovery_fetches()), (2, 1));
}

#[tokio::test]
async fn cache_control_issuer_override_and_raw_jwks_are_served() {
    let idp = TestIdp::start().await;
    let (_, headers, _) = fetch(&idp.jwks_uri()).await;
    assert!(headers.get(header::CACHE_CONTROL).is_none());
    idp.set_cache_control(Some("max-age=60".to_owned()));
    let (_, headers, _) = fetch(&idp.jwks_uri()).await;
    assert_eq!(headers[header::CACHE_CONTROL], "max-age=60");

    idp.set_discovery_issuer(Some("https://impostor.example".to_owned()));
    assert_eq!(
        fetch_json(&idp.discovery_url()).await["issuer"],
        "https://impostor.example"
    );
    idp.set_discovery_issuer(None);
    assert_eq!(
        fetch_json(&idp.discovery_url()).await["issuer"],
        idp.issuer()
    );

    let raw =
        json!({ "keys": [{ "kty": "oct", "kid": "k1", "k": "c2VjcmV0" }, rsa_1024_jwk("k1")] });
    idp.set_raw_jwks(Some(raw.clone()));
    assert_eq!(fetch_json(&idp.jwks_uri()).await, raw);
    idp.set_raw_jwks(None);
    assert_eq!(kids(&fetch_json(&idp.jwks_uri()).await), ["k1"]);
}

#[tokio::test]
async fn a_slow_jwks_is_counted_on_arrival_and_can_time_out_a_client() {
    let idp = TestIdp::start().await;
    idp.set_delay(Duration::from_secs(30));
    let started = Instant::now();
    let result = client()
        .get(idp.jwks_uri())
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(idp.jwks_fetches(), 1);

    idp.set_delay(Duration::from_millis(100));
    let started = Instant::now();
    assert_eq!(fetch(&idp.jwks_uri()).await.0, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn close_refuses_new_connections() {
    let idp = TestIdp::start().await;
    let client = client();
    let jwks_uri = idp.jwks_uri();
    // A pooled keep-alive connection must not outlive the close either.
    assert_eq!(
        client.get(&jwks_uri).send().await.unwrap().status(),
        StatusCode::OK
    );
    idp.close().await;
    let error = client.get(&jwks_uri).send().await.unwrap_err();
    assert!(error.is_connect() || error.is_request(), "{error:?}");
}

#[test]
fn the_small_rsa_fixture_has_a_1024_bit_modulus() {
    let jwk = rsa_1024_jwk("small");
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    assert_eq!(n.len(), 128);
    assert!(
        n[0] & 0x80 != 0,
        "the top bit is set, so the key is exactly 1024 bits"
    );
    assert_eq!(jwk["kid"], "small");
}
