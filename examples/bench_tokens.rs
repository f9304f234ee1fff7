//! Benchmark fixtures (`bench/run.sh`): one RS256 key as a JWKS file, `N` distinct valid access
//! tokens signed by it (one per line), and the body of one ext_authz `Check` call carrying the
//! first token, framed for gRPC (what h2load posts).
//!
//! `cargo run --release --example bench_tokens -- DIR COUNT`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark tool: failing loudly is the point"
)]

use std::collections::HashMap;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use authgate::demo::signing::SigningKey;
use authgate::verify::Alg;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use serde_json::json;

/// The issuer every benchmark server trusts.
const ISSUER: &str = "https://bench.authgate.test";
/// The audience every token carries.
const AUDIENCE: &str = "bench-api";

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("DIR"));
    let count: usize = args.next().map_or(20_000, |n| n.parse().expect("COUNT"));
    std::fs::create_dir_all(&dir).unwrap();

    let key = SigningKey::generate(Alg::RS256, "bench-rs256").unwrap();
    let jwks = json!({ "keys": [key.public_jwk()] });
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).unwrap();

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut tokens =
        std::io::BufWriter::new(std::fs::File::create(dir.join("tokens.txt")).unwrap());
    let mut first = None;
    for i in 0..count {
        let token = key
            .sign_jwt(&json!({
                "iss": ISSUER,
                "aud": AUDIENCE,
                "sub": format!("user-{i:06}"),
                "jti": format!("bench-{now}-{i}"),
                "scope": "read write",
                "iat": now,
                "exp": now + 4 * 3600,
            }))
            .unwrap();
        writeln!(tokens, "{token}").unwrap();
        first.get_or_insert(token);
    }
    tokens.flush().unwrap();

    // What Envoy sends for `GET /api/items` with the first token: a gRPC message is a 5-byte
    // prefix (not compressed, big-endian length) and the protobuf.
    let token = first.expect("at least one token");
    let headers: HashMap<String, String> = [
        ("authorization".to_owned(), format!("Bearer {token}")),
        (":authority".to_owned(), "api.example.com".to_owned()),
        ("user-agent".to_owned(), "wrk".to_owned()),
        ("accept".to_owned(), "*/*".to_owned()),
        ("x-forwarded-proto".to_owned(), "http".to_owned()),
        (
            "x-request-id".to_owned(),
            "0b0e1d0c-8f5c-4b8e-9d3a-2f1e0c9b8a7d".to_owned(),
        ),
    ]
    .into();
    let check = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: "GET".to_owned(),
                    path: "/api/items".to_owned(),
                    host: "api.example.com".to_owned(),
                    scheme: "http".to_owned(),
                    protocol: "HTTP/1.1".to_owned(),
                    headers,
                    ..HttpRequest::default()
                }),
            }),
            ..AttributeContext::default()
        }),
    };
    let message = prost::Message::encode_to_vec(&check);
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&message);
    std::fs::write(dir.join("check.grpc"), framed).unwrap();
    std::fs::write(dir.join("token.txt"), &token).unwrap();
    println!(
        "bench_tokens: {count} tokens, jwks.json, check.grpc in {} (issuer {ISSUER}, audience {AUDIENCE})",
        dir.display()
    );
}
