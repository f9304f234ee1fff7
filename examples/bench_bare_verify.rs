//! Benchmark baseline (`bench/run.sh`): a bare axum 0.8 server that verifies every request's
//! bearer token with jsonwebtoken (aws-lc-rs backend) against one RS256 JWK, checking `exp`,
//! `iss` and `aud`, and answers 200 with `X-Auth-Subject` or 401: what a service that verifies
//! per request, with no cache, costs.
//!
//! `cargo run --release --example bench_bare_verify -- 127.0.0.1:18081 JWKS_FILE ISSUER AUDIENCE`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark tool: failing loudly is the point"
)]

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};

#[derive(Debug, serde::Deserialize)]
struct Claims {
    sub: String,
}

struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

async fn check(State(v): State<Arc<Verifier>>, req: Request) -> Response {
    let token = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    match token.map(|t| decode::<Claims>(t, &v.key, &v.validation)) {
        Some(Ok(data)) => ([("x-auth-subject", data.claims.sub)], "").into_response(),
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().expect("ADDR");
    let jwks: JwkSet =
        serde_json::from_slice(&std::fs::read(args.next().expect("JWKS_FILE")).unwrap()).unwrap();
    let issuer = args.next().expect("ISSUER");
    let audience = args.next().expect("AUDIENCE");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    let verifier = Arc::new(Verifier {
        key: DecodingKey::from_jwk(&jwks.keys[0]).unwrap(),
        validation,
    });
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let app = Router::new().fallback(any(check)).with_state(verifier);
    axum::serve(listener, app).await.unwrap();
}
