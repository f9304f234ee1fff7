//! Certificate-bound access tokens (RFC 8705 §3) over real sockets: a token with
//! `cnf.x5t#S256` passes only with the client certificate it names, as every mouth receives it
//! (the configured header on `/auth` and `/auth/nginx`, `x-forwarded-client-cert` on `/envoy`,
//! `attributes.source.certificate` on ext_authz gRPC, `client_certificate` on TokenService),
//! from trusted proxies only, on first checks and verified-cache hits alike.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::app::App;
use common::idp::TestIdp;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::json;
use sha2::{Digest, Sha256};

const CERT_A: &str = include_str!("fixtures/client_a.pem");
const CERT_B: &str = include_str!("fixtures/client_b.pem");
const HEADER: &str = "x-forwarded-tls-client-cert";

fn der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

fn x5t(pem: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der(pem)))
}

/// As nginx's `$ssl_client_escaped_cert` and Envoy send it.
fn url_encoded(pem: &str) -> String {
    percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn start(mode: &str, extra: &str) -> (TestIdp, App) {
    let idp = TestIdp::start().await;
    let yaml = format!(
        "issuers:\n  - issuer: \"{}\"\n    proof_of_possession_mtls: {mode}\naudiences: [authgate-test]\nclient_cert_header: X-Forwarded-Tls-Client-Cert\n{extra}\n",
        idp.issuer()
    );
    let app = App::start(&yaml).await;
    assert!(app.wait_ready(Duration::from_secs(5)).await);
    (idp, app)
}

fn bound_token(idp: &TestIdp, pem: &str) -> String {
    let mut claims = idp.valid_claims("alice");
    claims["cnf"] = json!({"x5t#S256": x5t(pem)});
    idp.mint(claims)
}

async fn auth(
    app: &App,
    path: &str,
    token: &str,
    cert: Option<(&str, String)>,
) -> reqwest::Response {
    let mut request = app
        .client
        .get(app.url(path))
        .header("Authorization", format!("Bearer {token}"));
    if let Some((name, value)) = cert {
        request = request.header(name, value);
    }
    request.send().await.unwrap()
}

fn challenge(response: &reqwest::Response) -> String {
    response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_bound_token_passes_with_its_certificate_only_on_first_checks_and_cache_hits() {
    let (idp, app) = start("optional", "").await;
    let token = bound_token(&idp, CERT_A);
    for path in ["/auth", "/auth/nginx"] {
        for round in 0..2 {
            let ok = auth(&app, path, &token, Some((HEADER, url_encoded(CERT_A)))).await;
            assert_eq!(ok.status(), 200, "{path} round {round}");
            let other = auth(&app, path, &token, Some((HEADER, url_encoded(CERT_B)))).await;
            assert_eq!(other.status(), 401, "{path} round {round}");
            assert!(challenge(&other).contains("error=\"invalid_token\""));
            let none = auth(&app, path, &token, None).await;
            assert_eq!(none.status(), 401, "{path} round {round}");
        }
    }
    // Traefik's passTLSClientCert shape: base64 DER, URL-escaped, no PEM lines.
    let traefik = url_encoded(&STANDARD.encode(der(CERT_A)));
    assert_eq!(
        auth(&app, "/auth", &token, Some((HEADER, traefik)))
            .await
            .status(),
        200
    );
    // Unbound tokens still pass in optional mode.
    let unbound = idp.mint(idp.valid_claims("bob"));
    assert_eq!(auth(&app, "/auth", &unbound, None).await.status(), 200);
}

#[tokio::test]
async fn strict_mode_refuses_unbound_tokens_and_off_mode_ignores_binding() {
    let (idp, app) = start("strict", "").await;
    let unbound = idp.mint(idp.valid_claims("bob"));
    let response = auth(&app, "/auth", &unbound, Some((HEADER, url_encoded(CERT_A)))).await;
    assert_eq!(response.status(), 401);
    let bound = bound_token(&idp, CERT_A);
    assert_eq!(
        auth(&app, "/auth", &bound, Some((HEADER, url_encoded(CERT_A))))
            .await
            .status(),
        200
    );

    let (idp, app) = start("off", "").await;
    let bound = bound_token(&idp, CERT_A);
    assert_eq!(auth(&app, "/auth", &bound, None).await.status(), 200);
}

#[tokio::test]
async fn a_malformed_cnf_is_a_malformed_token_where_binding_is_checked() {
    let (idp, app) = start("optional", "").await;
    for cnf in [json!("x5t"), json!({"x5t#S256": 42})] {
        let mut claims = idp.valid_claims("alice");
        claims["cnf"] = cnf.clone();
        let response = auth(&app, "/auth", &idp.mint(claims), None).await;
        assert_eq!(response.status(), 401, "{cnf}");
    }
}

#[tokio::test]
async fn a_certificate_from_an_untrusted_peer_is_not_believed() {
    let (idp, app) = start("optional", "trusted_proxies: [10.0.0.0/8]").await;
    let token = bound_token(&idp, CERT_A);
    let response = auth(&app, "/auth", &token, Some((HEADER, url_encoded(CERT_A)))).await;
    assert_eq!(
        response.status(),
        401,
        "the test client is not a trusted proxy"
    );
}

#[tokio::test]
async fn envoy_http_mode_reads_x_forwarded_client_cert() {
    let (idp, app) = start("optional", "").await;
    let token = bound_token(&idp, CERT_A);
    let xfcc = |pem: &str| {
        format!(
            "By=spiffe://proxy;Hash={};Cert=\"{}\";Subject=\"CN=client\"",
            Sha256::digest(der(pem))
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            url_encoded(pem)
        )
    };
    let path = "/envoy/items";
    let ok = auth(
        &app,
        path,
        &token,
        Some(("x-forwarded-client-cert", xfcc(CERT_A))),
    )
    .await;
    assert_eq!(ok.status(), 200);
    let other = auth(
        &app,
        path,
        &token,
        Some(("x-forwarded-client-cert", xfcc(CERT_B))),
    )
    .await;
    assert_eq!(other.status(), 401);
}

#[tokio::test]
async fn ext_authz_grpc_reads_the_source_certificate() {
    let (idp, app) = start("optional", "").await;
    let token = bound_token(&idp, CERT_A);
    let mut client = AuthorizationClient::new(app.grpc_channel().await);
    for (certificate, allowed) in [
        (url_encoded(CERT_A), true),
        (url_encoded(CERT_B), false),
        (String::new(), false),
    ] {
        let mut request = common::envoy::envoy_check_headers(
            "/items",
            &[("authorization", format!("Bearer {token}"))],
        );
        if let Some(attributes) = request.attributes.as_mut() {
            attributes.source = Some(Peer {
                certificate,
                ..Peer::default()
            });
        }
        let response = client.check(request).await.unwrap().into_inner();
        assert_eq!(response.status.unwrap().code == 0, allowed);
    }
}

#[tokio::test]
async fn token_service_verify_takes_the_client_certificate() {
    use authgate::grpc::pb::VerifyRequest;
    use authgate::grpc::pb::token_service_client::TokenServiceClient;
    let (idp, app) = start("optional", "").await;
    let token = bound_token(&idp, CERT_A);
    let mut client = TokenServiceClient::new(app.grpc_channel().await);
    for (certificate, allowed, reason) in [
        (CERT_A.to_owned(), true, "valid_token"),
        (CERT_B.to_owned(), false, "certificate_mismatch"),
        (String::new(), false, "certificate_mismatch"),
    ] {
        let response = client
            .verify(VerifyRequest {
                token: token.clone(),
                client_certificate: certificate,
                ..VerifyRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (response.allowed, response.reason.as_str()),
            (allowed, reason)
        );
    }
}
