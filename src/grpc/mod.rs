//! The gRPC mouth (tonic): Envoy ext_authz v3 `Authorization/Check` ([`ext_authz`]), authgate's
//! own `authgate.v1.TokenService/Verify` ([`token_service`]), `grpc.health.v1` (serving only
//! while ready) and server reflection, all on the gRPC port, served by the same accept loop as
//! every other port (`server.rs`). Each RPC converts in to the core and out from its
//! `Decision`; nothing here decides.

mod check_response;
pub mod ext_authz;
pub mod token_service;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::admin::{Health, readiness};
use crate::live::Live;
use crate::server::{self, Port, Stop};
use crate::shutdown::until_true;

pub use ext_authz::ExtAuthzServer;
pub use token_service::Tokens;

/// Types generated from `proto/authgate/v1`.
#[allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    reason = "generated code"
)]
pub mod pb {
    tonic::include_proto!("authgate.v1");

    /// Encoded descriptors of authgate's own API, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/authgate_descriptor.bin"));
    /// Encoded descriptors of Envoy's ext_authz service, for server reflection.
    pub const ENVOY_FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/envoy_ext_authz_descriptor.bin"));
}

/// Largest gRPC message accepted (a CheckRequest carries the request headers, and the body only
/// when Envoy is configured to send it); also the cap on a call's header list.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The health names reported: the server as a whole and each service.
const HEALTH_NAMES: [&str; 3] = [
    "",
    "envoy.service.auth.v3.Authorization",
    "authgate.v1.TokenService",
];

/// Serves the gRPC port until `stop.close` turns true, then drains for at most
/// `stop.drain_timeout`. Health turns NOT_SERVING as soon as shutdown begins.
pub async fn serve(listener: TcpListener, decider: Arc<Live>, health: Arc<Health>, stop: Stop) {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    // tonic-health starts "" as SERVING; until the checker task has looked, a probe arriving
    // at start-up must not see SERVING without a key set.
    for name in HEALTH_NAMES {
        reporter
            .set_service_status(name, tonic_health::ServingStatus::NotServing)
            .await;
    }
    let checker = tokio::spawn(report_health(
        reporter,
        Arc::clone(&decider),
        Arc::clone(&health),
        stop.clone(),
    ));

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(pb::ENVOY_FILE_DESCRIPTOR_SET)
    };
    let limits = decider.get().config().limits.clone();
    let tokens =
        pb::token_service_server::TokenServiceServer::new(Tokens::new(Arc::clone(&decider)))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut routes = tonic::service::Routes::new(health_service).add_service(tokens);
    // v1 for current grpcurl and grpc tooling, v1alpha for older clients.
    match (reflection().build_v1(), reflection().build_v1alpha()) {
        (Ok(v1), Ok(v1alpha)) => routes = routes.add_service(v1).add_service(v1alpha),
        (Err(error), _) | (_, Err(error)) => {
            let error = &error as &dyn std::error::Error;
            tracing::warn!(error, "gRPC reflection unavailable");
        }
    }
    let port = Port {
        name: "grpc",
        http2_only: true,
        max_header_bytes: MAX_MESSAGE_BYTES,
    };
    let mouth = GrpcMouth {
        check: ExtAuthzServer::new(decider),
        router: routes.prepare().into_axum_router(),
    };
    server::serve(port, listener, mouth, &limits, stop).await;
    checker.abort();
}

/// The gRPC port: ext_authz `Check`, the call every check through Envoy makes, goes straight to
/// its server (no router, the peer passed rather than inserted as an extension); the other
/// services (TokenService, health, reflection) through tonic's routes.
#[derive(Debug, Clone)]
struct GrpcMouth {
    check: ExtAuthzServer,
    router: axum::Router,
}

impl server::Mouth for GrpcMouth {
    fn answer(
        self,
        req: hyper::Request<hyper::body::Incoming>,
        peer: std::net::SocketAddr,
    ) -> impl Future<Output = axum::response::Response> + Send + 'static {
        use tower::ServiceExt as _;
        async move {
            if req.uri().path() != ext_authz::CHECK_PATH {
                return self.router.answer(req, peer).await;
            }
            let answer = self.check.with_peer(peer).oneshot(req).await;
            let Ok(answer) = answer;
            answer.map(axum::body::Body::new)
        }
    }
}

/// Keeps `grpc.health.v1` in step with readiness: key sets are polled every 200 ms; shutdown is
/// pushed, so NOT_SERVING goes out the moment it begins.
async fn report_health(
    reporter: tonic_health::server::HealthReporter,
    decider: Arc<Live>,
    health: Arc<Health>,
    stop: Stop,
) {
    let Stop {
        mut draining,
        mut close,
        ..
    } = stop;
    let mut last = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        let (ready, _) = readiness(&decider.get(), &health);
        if last != Some(ready) {
            let status = if ready {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            for name in HEALTH_NAMES {
                reporter.set_service_status(name, status).await;
            }
            last = Some(ready);
        }
        tokio::select! {
            _ = tick.tick() => {}
            () = until_true(&mut draining), if !*draining.borrow() => {}
            () = until_true(&mut close) => return,
        }
    }
}
