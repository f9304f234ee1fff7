//! Benchmark baseline (`bench/run.sh`): a bare axum 0.8 server that answers every request 200
//! with one header, the least a forward-auth service can do.
//!
//! `cargo run --release --example bench_bare_axum -- 127.0.0.1:18080`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark tool: failing loudly is the point"
)]

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::any;

async fn allow() -> impl IntoResponse {
    ([("x-auth-subject", "bench")], "")
}

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).expect("ADDR");
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let app = Router::new().fallback(any(allow));
    axum::serve(listener, app).await.unwrap();
}
