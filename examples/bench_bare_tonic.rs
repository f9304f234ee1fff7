//! Benchmark baseline (`bench/run.sh`): a bare tonic 0.14 ext_authz v3 server whose `Check`
//! always allows with one header, the least an ext_authz service can do.
//!
//! `cargo run --release --example bench_bare_tonic -- 127.0.0.1:19001`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark tool: failing loudly is the point"
)]

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderAppendAction,
};
use envoy_types::ext_authz::v3::{CheckResponseExt as _, OkHttpResponseBuilder};
use tonic::{Request, Response, Status};

#[derive(Debug, Default)]
struct AlwaysAllow;

#[tonic::async_trait]
impl Authorization for AlwaysAllow {
    async fn check(
        &self,
        _request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let mut ok = OkHttpResponseBuilder::new();
        ok.add_header(
            "x-auth-subject",
            "bench",
            Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
            false,
        );
        let mut response = CheckResponse::with_status(Status::ok(""));
        response.set_http_response(ok);
        Ok(Response::new(response))
    }
}

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).expect("ADDR").parse().unwrap();
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(AlwaysAllow))
        .serve(addr)
        .await
        .unwrap();
}
