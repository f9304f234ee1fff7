//! DPoP-bound tokens (RFC 9449) over real sockets: a token with `cnf.jkt` passes only as
//! `Authorization: DPoP` with a fresh proof of its key for the original request, on every mouth
//! (forward-auth headers, nginx headers, Envoy HTTP and gRPC attributes), on first checks and
//! verified-cache hits alike; every way a proof can be wrong is `invalid_dpop_proof` on the
//! `DPoP` challenge; and the RFC 9728 metadata document and challenge parameter.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use std::time::Duration;

use authgate::demo::signing::SigningKey;
use authgate::verify::Alg;
use common::app::App;
use common::dpop::{self, ath, jkt, now, proof_header};
use common::idp::{TEST_AUDIENCE, TestIdp};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use serde_json::{Value, json};

const URL: &str = "https://api.example.com/orders/7";

async fn start(mode: &str, extra: &str) -> (TestIdp, App) {
    let idp = TestIdp::start().await;
    let yaml = format!(
        "issuers:\n  - issuer: \"{}\"\n    dpop: {mode}\naudiences: [{TEST_AUDIENCE}]\n{extra}\n",
        idp.issuer()
    );
    let app = App::start(&yaml).await;
    assert!(app.wait_ready(Duration::from_secs(5)).await);
    (idp, app)
}

fn bound_token(idp: &TestIdp, key: &SigningKey) -> String {
    dpop::bound_token(idp, "alice", key)
}

/// The claims of a good proof for `GET URL` presenting `token`.
fn proof_claims(token: &str) -> Value {
    dpop::proof_claims("GET", URL, token)
}

fn sign(key: &SigningKey, header: &Value, claims: &Value) -> String {
    key.sign_with_header(header, claims).unwrap()
}

fn proof(key: &SigningKey, token: &str) -> String {
    dpop::proof(key, "GET", URL, token)
}

/// `GET URL` through the forward-auth mouth, as Traefik describes it.
async fn forward_auth(app: &App, scheme: &str, token: &str, proofs: &[&str]) -> reqwest::Response {
    let mut request = app
        .client
        .get(app.url("/auth"))
        .header("X-Forwarded-Method", "GET")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "api.example.com")
        .header("X-Forwarded-Uri", "/orders/7?page=2")
        .header("Authorization", format!("{scheme} {token}"));
    for proof in proofs {
        request = request.header("DPoP", *proof);
    }
    request.send().await.unwrap()
}

fn challenge(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_bound_token_passes_with_a_fresh_proof_only() {
    let (idp, app) = start("optional", "").await;
    let key = SigningKey::generate(Alg::ES256, "client").unwrap();
    let token = bound_token(&idp, &key);
    for round in 0..3 {
        let ok = forward_auth(&app, "DPoP", &token, &[&proof(&key, &token)]).await;
        assert_eq!(ok.status(), 200, "round {round}: {}", challenge(&ok));
        assert_eq!(ok.headers()["x-auth-subject"], "alice");
    }
    // The same token as a bearer token: denied (it is bound), with a DPoP challenge.
    let bearer = forward_auth(&app, "Bearer", &token, &[]).await;
    assert_eq!(bearer.status(), 401);
    let c = challenge(&bearer);
    assert!(c.contains("DPoP realm=") && c.contains("algs=\""), "{c}");
    assert!(c.contains("error=\"invalid_token\""), "{c}");
    // A proof used twice.
    let once = proof(&key, &token);
    assert_eq!(
        forward_auth(&app, "DPoP", &token, &[&once]).await.status(),
        200
    );
    let replay = forward_auth(&app, "DPoP", &token, &[&once]).await;
    assert_eq!(replay.status(), 401);
    let c = challenge(&replay);
    assert!(
        c.contains("DPoP") && c.contains("error=\"invalid_dpop_proof\""),
        "{c}"
    );
    // Another key's proof for the token: the key is not the bound one.
    let thief = SigningKey::generate(Alg::ES256, "thief").unwrap();
    let stolen = forward_auth(&app, "DPoP", &token, &[&proof(&thief, &token)]).await;
    assert_eq!(stolen.status(), 401);
    // An unbound token is still a good bearer token in optional mode, but not a DPoP one.
    let unbound = idp.mint(idp.valid_claims("bob"));
    assert_eq!(
        forward_auth(&app, "Bearer", &unbound, &[]).await.status(),
        200
    );
    let as_dpop = forward_auth(&app, "DPoP", &unbound, &[&proof(&key, &unbound)]).await;
    assert_eq!(as_dpop.status(), 401);
    let metrics = app.metrics().await;
    for reason in ["dpop_proof_replayed", "dpop_key_mismatch", "dpop_required"] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason}"
        );
    }
}

#[tokio::test]
async fn every_kind_of_bad_proof_is_refused() {
    let (idp, app) = start(
        "optional",
        "dpop_proofs: {algorithms: [ES256, EdDSA], max_age: 60s, leeway: 5s}",
    )
    .await;
    let key = SigningKey::generate(Alg::ES256, "client").unwrap();
    let token = bound_token(&idp, &key);
    let good = proof_claims(&token);
    let with = |name: &str, value: Value| {
        let mut claims = good.clone();
        claims[name] = value;
        claims["jti"] = json!(format!("{:x}", fastrand::u128(..)));
        claims
    };
    let without = |name: &str| {
        let mut claims = with("jti", json!(format!("{:x}", fastrand::u128(..))));
        claims.as_object_mut().unwrap().remove(name);
        claims
    };
    let header = proof_header(&key);
    let mut private = header.clone();
    private["jwk"]["d"] = json!("AAAA");
    let mut typ_jwt = header.clone();
    typ_jwt["typ"] = json!("JWT");
    let mut no_jwk = header.clone();
    no_jwk.as_object_mut().unwrap().remove("jwk");
    let other = SigningKey::generate(Alg::ES256, "other").unwrap();
    let mut other_jwk = header.clone();
    other_jwk["jwk"] = other.public_jwk();
    let rsa = SigningKey::generate(Alg::RS256, "rsa").unwrap();
    let cases: Vec<(&str, String)> = vec![
        (
            "wrong method",
            sign(&key, &header, &with("htm", json!("POST"))),
        ),
        (
            "wrong path",
            sign(
                &key,
                &header,
                &with("htu", json!("https://api.example.com/orders/8")),
            ),
        ),
        (
            "wrong host",
            sign(
                &key,
                &header,
                &with("htu", json!("https://evil.example.com/orders/7")),
            ),
        ),
        (
            "wrong scheme",
            sign(
                &key,
                &header,
                &with("htu", json!("http://api.example.com/orders/7")),
            ),
        ),
        (
            "wrong ath",
            sign(&key, &header, &with("ath", json!(ath("another token")))),
        ),
        ("no ath", sign(&key, &header, &without("ath"))),
        ("no jti", sign(&key, &header, &without("jti"))),
        (
            "iat too old",
            sign(&key, &header, &with("iat", json!(now() - 120))),
        ),
        (
            "iat in the future",
            sign(&key, &header, &with("iat", json!(now() + 60))),
        ),
        (
            "iat not a number",
            sign(&key, &header, &with("iat", json!("now"))),
        ),
        ("typ JWT", sign(&key, &typ_jwt, &with("x", json!(1)))),
        ("no jwk", sign(&key, &no_jwk, &with("x", json!(1)))),
        ("a private jwk", sign(&key, &private, &with("x", json!(1)))),
        (
            "signed by another key",
            sign(&key, &other_jwk, &with("x", json!(1))),
        ),
        ("an algorithm not allowed", proof(&rsa, &token)),
        ("not a JWS", "not.a-proof".to_owned()),
    ];
    for (name, bad) in &cases {
        let response = forward_auth(&app, "DPoP", &token, &[bad]).await;
        assert_eq!(response.status(), 401, "{name}");
        let c = challenge(&response);
        assert!(c.contains("error=\"invalid_dpop_proof\""), "{name}: {c}");
    }
    // No proof, and two proofs.
    assert_eq!(forward_auth(&app, "DPoP", &token, &[]).await.status(), 401);
    let (a, b) = (proof(&key, &token), proof(&key, &token));
    assert_eq!(
        forward_auth(&app, "DPoP", &token, &[&a, &b]).await.status(),
        401
    );
    // The query of the original request is not part of htu; a proof naming it still holds.
    let query = sign(&key, &header, &with("htu", json!(format!("{URL}?page=2"))));
    assert_eq!(
        forward_auth(&app, "DPoP", &token, &[&query]).await.status(),
        200
    );
    // An Ed25519 proof key works where allowed.
    let ed = SigningKey::generate(Alg::EdDSA, "ed").unwrap();
    let ed_token = bound_token(&idp, &ed);
    assert_eq!(
        forward_auth(&app, "DPoP", &ed_token, &[&proof(&ed, &ed_token)])
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn required_mode_refuses_bearer_tokens_and_off_mode_does_not_know_dpop() {
    let (idp, app) = start("required", "").await;
    let unbound = idp.mint(idp.valid_claims("bob"));
    let response = forward_auth(&app, "Bearer", &unbound, &[]).await;
    assert_eq!(response.status(), 401);
    let c = challenge(&response);
    assert!(c.starts_with("DPoP ") && !c.contains("Bearer"), "{c}");
    let key = SigningKey::generate(Alg::ES256, "client").unwrap();
    let token = bound_token(&idp, &key);
    assert_eq!(
        forward_auth(&app, "DPoP", &token, &[&proof(&key, &token)])
            .await
            .status(),
        200
    );

    let (idp, app) = start("off", "").await;
    let token = bound_token(&idp, &key);
    // `DPoP` is not a scheme authgate reads here: no token.
    let response = forward_auth(&app, "DPoP", &token, &[&proof(&key, &token)]).await;
    assert_eq!(response.status(), 401);
    assert!(!challenge(&response).contains("DPoP"));
    // Off: cnf.jkt is not looked at (as with proof_of_possession_mtls: off).
    assert_eq!(
        forward_auth(&app, "Bearer", &token, &[]).await.status(),
        200
    );
}

#[tokio::test]
async fn every_mouth_carries_the_proof_and_the_original_request() {
    let (idp, app) = start("optional", "").await;
    let key = SigningKey::generate(Alg::ES256, "client").unwrap();
    let token = bound_token(&idp, &key);
    // nginx: X-Original-* and X-Forwarded-Proto.
    let nginx = app
        .client
        .get(app.url("/auth/nginx"))
        .header("X-Original-Method", "GET")
        .header("X-Forwarded-Proto", "https")
        .header("X-Original-Host", "api.example.com")
        .header("X-Original-Uri", "/orders/7")
        .header("Authorization", format!("DPoP {token}"))
        .header("DPoP", proof(&key, &token))
        .send()
        .await
        .unwrap();
    assert_eq!(nginx.status(), 200, "{}", challenge(&nginx));
    // Envoy HTTP mode: the method, Host and path of the check request itself.
    let envoy = app
        .client
        .get(app.url("/envoy/orders/7"))
        .header("Host", "api.example.com")
        .header("X-Forwarded-Proto", "https")
        .header("Authorization", format!("DPoP {token}"))
        .header("DPoP", proof(&key, &token))
        .send()
        .await
        .unwrap();
    assert_eq!(envoy.status(), 200, "{}", challenge(&envoy));
    // Envoy gRPC: the attributes.
    let mut client = AuthorizationClient::new(app.grpc_channel().await);
    let request = |proof: String| CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: "GET".to_owned(),
                    scheme: "https".to_owned(),
                    host: "api.example.com".to_owned(),
                    path: "/orders/7".to_owned(),
                    headers: [
                        ("authorization".to_owned(), format!("DPoP {token}")),
                        ("dpop".to_owned(), proof),
                    ]
                    .into_iter()
                    .collect(),
                    ..HttpRequest::default()
                }),
            }),
            ..AttributeContext::default()
        }),
    };
    let ok = client
        .check(request(proof(&key, &token)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.status.map(|s| s.code), Some(0));
    let other = SigningKey::generate(Alg::ES256, "other").unwrap();
    let denied = client
        .check(request(proof(&other, &token)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(denied.status.map(|s| s.code), Some(16));
}

#[tokio::test]
async fn a_dpop_bound_opaque_token_needs_its_proof_too() {
    let idp = TestIdp::start().await;
    let yaml = format!(
        "issuers:\n  - issuer: \"{}\"\n    dpop: optional\n    client_id: authgate\n    client_secret: s3cret\n    introspection: {{enabled: true}}\naudiences: [{TEST_AUDIENCE}]\n",
        idp.issuer()
    );
    let app = App::start(&yaml).await;
    assert!(app.wait_ready(Duration::from_secs(5)).await);
    let key = SigningKey::generate(Alg::ES256, "client").unwrap();
    let mut claims = idp.valid_claims("alice");
    claims["cnf"] = json!({"jkt": jkt(&key)});
    claims["token_type"] = json!("DPoP");
    let token = idp.issue_opaque(claims);
    let ok = forward_auth(&app, "DPoP", &token, &[&proof(&key, &token)]).await;
    assert_eq!(ok.status(), 200, "{}", challenge(&ok));
    assert_eq!(
        forward_auth(&app, "Bearer", &token, &[]).await.status(),
        401
    );
}

#[tokio::test]
async fn protected_resource_metadata_is_served_and_named_in_challenges() {
    let (_idp, app) = start(
        "optional",
        "resource_metadata: {resource: https://api.example.com/v1, authorization_servers: [https://sso.example.com], scopes_supported: [api:read]}",
    )
    .await;
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/v1",
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let document: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(document["resource"], "https://api.example.com/v1");
        assert_eq!(
            document["authorization_servers"],
            json!(["https://sso.example.com"])
        );
        assert_eq!(document["scopes_supported"], json!(["api:read"]));
        assert_eq!(document["bearer_methods_supported"], json!(["header"]));
        assert!(
            document["dpop_signing_alg_values_supported"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        );
    }
    let elsewhere = app
        .client
        .get(app.url("/.well-known/oauth-protected-resource/v2"))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 404);
    let denied = app.check(None).await;
    assert_eq!(denied.status(), 401);
    let c = challenge(&denied);
    assert!(
        c.contains(
            "resource_metadata=\"https://api.example.com/.well-known/oauth-protected-resource/v1\""
        ),
        "{c}"
    );

    // Not configured: no document, no parameter.
    let (_idp, app) = App::with_idp("").await;
    let response = app
        .client
        .get(app.url("/.well-known/oauth-protected-resource"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(!challenge(&app.check(None).await).contains("resource_metadata"));
}
