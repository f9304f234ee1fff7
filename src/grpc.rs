//! The gRPC mouth (tonic): Envoy ext_authz v3 `Authorization/Check`, authgate's own
//! `authgate.v1.TokenService/Verify`, `grpc.health.v1` (serving only while ready) and server
//! reflection. Each RPC converts in to the core's request and out from its `Decision`; nothing
//! here decides. A denial is a `CheckResponse` (the RPC itself is OK), so Envoy denies even with
//! `failure_mode_allow: true`.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest as EnvoyCheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderAppendAction, HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::address;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value as PbValue, value::Kind};
use envoy_types::pb::google::rpc;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Code, Request, Response, Status};

use crate::admin::{Health, readiness};
use crate::config::Requirement;
use crate::decision::{CheckRequest, Decider, Decision, Deny, DenyKind, Frontend, Identity};
use crate::http::{challenge, message};
use crate::shutdown::until_true;
use crate::token::split_joined_credentials;

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

use pb::token_service_server::{TokenService, TokenServiceServer};
use pb::{VerifyRequest, VerifyResponse};

/// Largest gRPC message accepted (a CheckRequest carries the request headers, and the body only
/// when Envoy is configured to send it).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The ext_authz `Check` service.
#[derive(Debug, Clone)]
pub struct ExtAuthz {
    decider: Arc<Decider>,
}

/// The `TokenService` implementation.
#[derive(Debug, Clone)]
pub struct Tokens {
    decider: Arc<Decider>,
}

fn json_to_pb(value: &Value) -> PbValue {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_to_pb).collect(),
        }),
        Value::Object(map) => Kind::StructValue(object_to_struct(map)),
    };
    PbValue { kind: Some(kind) }
}

fn object_to_struct(map: &serde_json::Map<String, Value>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_pb(v)))
            .collect(),
    }
}

fn string_value(s: &str) -> PbValue {
    PbValue {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

/// `subject`, `issuer` and `scopes` for Envoy's dynamic metadata (access logs, RBAC).
fn identity_metadata(identity: &Identity) -> Struct {
    let mut fields = std::collections::HashMap::new();
    if let Some(sub) = &identity.subject {
        fields.insert("subject".to_owned(), string_value(sub));
    }
    fields.insert("issuer".to_owned(), string_value(&identity.issuer));
    fields.insert(
        "scopes".to_owned(),
        PbValue {
            kind: Some(Kind::ListValue(ListValue {
                values: identity.scopes.iter().map(|s| string_value(s)).collect(),
            })),
        },
    );
    Struct { fields }
}

fn peer_ip(req: &EnvoyCheckRequest) -> Option<std::net::IpAddr> {
    let address = req.attributes.as_ref()?.source.as_ref()?.address.as_ref()?;
    match address.address.as_ref()? {
        address::Address::SocketAddress(sa) => sa.address.parse().ok(),
        _ => None,
    }
}

/// Translates Envoy's CheckRequest. Envoy joins repeated headers with `,` in the `headers` map;
/// a JWT never contains a comma, so each part is one Authorization value.
fn to_check_request(req: &EnvoyCheckRequest, max_header_bytes: usize) -> CheckRequest {
    let mut check = CheckRequest {
        frontend: Frontend::Grpc,
        method: None,
        host: None,
        path: None,
        authorization: Vec::new(),
        peer: peer_ip(req),
        malformed: false,
    };
    let Some(http) = req
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
    else {
        check.malformed = true;
        return check;
    };
    let mut header_bytes = 0usize;
    let mut authorization = Vec::new();
    for (name, value) in &http.headers {
        header_bytes += name.len() + value.len();
        if name.eq_ignore_ascii_case("authorization") {
            authorization.extend(split_joined_credentials(value.as_bytes()));
        }
    }
    if let Some(map) = &http.header_map {
        for h in &map.headers {
            let value = if h.raw_value.is_empty() {
                h.value.as_bytes()
            } else {
                h.raw_value.as_slice()
            };
            header_bytes += h.key.len() + value.len();
            if h.key.eq_ignore_ascii_case("authorization") {
                authorization.push(value.to_vec());
            }
        }
    }
    if http.path.is_empty() || header_bytes > max_header_bytes {
        check.malformed = true;
        return check;
    }
    check.method = Some(http.method.to_ascii_uppercase()).filter(|m| !m.is_empty());
    check.host = Some(http.host.clone()).filter(|h| !h.is_empty());
    check.path = Some(http.path.clone());
    check.authorization = authorization;
    check
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    #[allow(
        deprecated,
        reason = "`append` must stay unset when append_action is used"
    )]
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        append: None,
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
        keep_empty_value: false,
    }
}

/// gRPC code and HTTP status for a denial kind (DESIGN.md's response table).
fn deny_codes(kind: DenyKind) -> (Code, u16) {
    match kind {
        DenyKind::Unauthenticated | DenyKind::InvalidToken => (Code::Unauthenticated, 401),
        DenyKind::InvalidRequest => (Code::InvalidArgument, 400),
        DenyKind::InsufficientScope | DenyKind::Forbidden => (Code::PermissionDenied, 403),
        DenyKind::Unavailable => (Code::Unavailable, 503),
    }
}

fn deny_response(deny: &Deny, realm: &str) -> CheckResponse {
    let (code, http_status) = deny_codes(deny.kind());
    let mut headers = vec![
        header("content-type", "text/plain; charset=utf-8"),
        header("cache-control", "no-store"),
    ];
    let challenge = challenge(deny, realm)
        .or_else(|| (http_status == 401).then(|| format!("Bearer realm=\"{realm}\"")));
    if let Some(c) = challenge {
        headers.push(header("www-authenticate", &c));
    }
    if let Some(secs) = deny.retry_after {
        headers.push(header("retry-after", &secs.to_string()));
    }
    CheckResponse {
        status: Some(rpc::Status {
            code: code as i32,
            message: deny.reason.as_str().to_owned(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(http_status),
            }),
            headers,
            body: message(deny.kind()).to_owned(),
        })),
        dynamic_metadata: None,
    }
}

impl ExtAuthz {
    fn allow_response(&self, allow: crate::decision::Allow) -> CheckResponse {
        let token = &self.decider.config().token;
        let headers_to_remove = allow.headers_to_remove(token);
        let query_parameters_to_remove = allow.query_parameters_to_remove(token);
        let headers = allow
            .headers
            .iter()
            .filter_map(|(name, value)| Some(header(name.as_str(), value.to_str().ok()?)))
            .collect();
        CheckResponse {
            status: Some(rpc::Status {
                code: Code::Ok as i32,
                message: String::new(),
                details: Vec::new(),
            }),
            http_response: Some(HttpResponse::OkResponse(
                #[allow(
                    deprecated,
                    reason = "dynamic_metadata inside OkHttpResponse is deprecated; the top-level one is set"
                )]
                OkHttpResponse {
                    headers,
                    headers_to_remove,
                    query_parameters_to_remove,
                    ..OkHttpResponse::default()
                },
            )),
            dynamic_metadata: allow.identity.as_ref().map(identity_metadata),
        }
    }
}

/// The ext_authz server. It is tonic's generated `AuthorizationServer` in all but the decoder: a
/// CheckRequest that does not decode (invalid UTF-8 in a header value a client sent, an
/// oversized message) becomes an empty CheckRequest, which is denied as `malformed_check`. An
/// RPC error instead would let `failure_mode_allow: true` turn the client's garbage into an
/// allow.
#[derive(Debug, Clone)]
pub struct ExtAuthzServer {
    inner: Arc<ExtAuthz>,
}

impl ExtAuthzServer {
    /// The server for this decider.
    pub fn new(decider: Arc<Decider>) -> Self {
        Self {
            inner: Arc::new(ExtAuthz { decider }),
        }
    }
}

impl tonic::server::NamedService for ExtAuthzServer {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

/// Decodes CheckRequests, mapping what cannot be decoded to an empty request.
#[derive(Debug, Default)]
struct LenientDecoder;

impl tonic::codec::Decoder for LenientDecoder {
    type Item = EnvoyCheckRequest;
    type Error = Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<EnvoyCheckRequest>, Status> {
        use prost::bytes::Buf as _;
        if buf.remaining() > MAX_MESSAGE_BYTES {
            buf.advance(buf.remaining());
            return Ok(Some(EnvoyCheckRequest::default()));
        }
        match <EnvoyCheckRequest as prost::Message>::decode(&mut *buf) {
            Ok(request) => Ok(Some(request)),
            Err(error) => {
                tracing::debug!(%error, "undecodable CheckRequest");
                buf.advance(buf.remaining());
                Ok(Some(EnvoyCheckRequest::default()))
            }
        }
    }
}

#[derive(Debug, Default, Clone)]
struct LenientCodec;

impl tonic::codec::Codec for LenientCodec {
    type Encode = CheckResponse;
    type Decode = EnvoyCheckRequest;
    type Encoder = tonic_prost::ProstEncoder<CheckResponse>;
    type Decoder = LenientDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(tonic::codec::BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        LenientDecoder
    }
}

struct CheckMethod(Arc<ExtAuthz>);

impl tonic::server::UnaryService<EnvoyCheckRequest> for CheckMethod {
    type Response = CheckResponse;
    type Future = tonic::codegen::BoxFuture<Response<CheckResponse>, Status>;

    fn call(&mut self, request: Request<EnvoyCheckRequest>) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move { inner.check(request).await })
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for ExtAuthzServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != "/envoy.service.auth.v3.Authorization/Check" {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            // The transport bound; anything between it and MAX_MESSAGE_BYTES is denied by the
            // decoder instead of failing the RPC.
            let mut grpc = tonic::server::Grpc::new(LenientCodec)
                .apply_max_message_size_config(Some(16 * MAX_MESSAGE_BYTES), None);
            Ok(grpc.unary(CheckMethod(inner), request).await)
        })
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: Request<EnvoyCheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let config = self.decider.config();
        let mut check = to_check_request(request.get_ref(), config.limits.max_header_bytes);
        // Trust is a property of the connection (the proxy), not of the addresses inside the
        // message, which the message's author chose.
        if !config.trusts_peer(request.remote_addr().map(|a| a.ip())) {
            check = check.without_request_attributes();
        }
        let response = match self.decider.decide(&check).await {
            Decision::Allow(allow) => self.allow_response(allow),
            Decision::Deny(deny) => deny_response(&deny, &config.http.realm),
        };
        Ok(Response::new(response))
    }
}

/// The RFC 6750 error code of a denial kind, or `unavailable`.
fn error_code(kind: DenyKind) -> &'static str {
    match kind {
        DenyKind::Unauthenticated | DenyKind::InvalidToken => "invalid_token",
        DenyKind::InvalidRequest => "invalid_request",
        DenyKind::InsufficientScope | DenyKind::Forbidden => "insufficient_scope",
        DenyKind::Unavailable => "unavailable",
    }
}

#[tonic::async_trait]
impl TokenService for Tokens {
    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> Result<Response<VerifyResponse>, Status> {
        let req = request.into_inner();
        let requirement = Requirement {
            audiences: (!req.audiences.is_empty()).then_some(req.audiences),
            scopes: req.scopes,
            ..Requirement::default()
        };
        let response = match self.decider.decide_token(&req.token, &requirement).await {
            Decision::Allow(allow) => {
                let identity = allow.identity.unwrap_or_else(|| Identity {
                    subject: None,
                    issuer: String::new(),
                    scopes: Vec::new(),
                    expires_at: 0,
                    claims: serde_json::Map::new(),
                });
                VerifyResponse {
                    allowed: true,
                    reason: "valid_token".to_owned(),
                    error: String::new(),
                    subject: identity.subject.clone().unwrap_or_default(),
                    issuer: identity.issuer.clone(),
                    expires_at: identity.expires_at,
                    scopes: identity.scopes.clone(),
                    claims: Some(object_to_struct(&identity.claims)),
                    headers: allow
                        .headers
                        .iter()
                        .filter_map(|(n, v)| {
                            Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned()))
                        })
                        .collect(),
                }
            }
            Decision::Deny(deny) => VerifyResponse {
                allowed: false,
                reason: deny.reason.as_str().to_owned(),
                error: error_code(deny.kind()).to_owned(),
                ..VerifyResponse::default()
            },
        };
        Ok(Response::new(response))
    }
}

/// Serves the gRPC port until `close` turns true, then drains for at most `drain_timeout`.
/// Health turns NOT_SERVING as soon as shutdown begins (`health.is_draining()`).
pub async fn serve(
    listener: TcpListener,
    decider: Arc<Decider>,
    health: Arc<Health>,
    mut close: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let names = [
        "",
        "envoy.service.auth.v3.Authorization",
        "authgate.v1.TokenService",
    ];
    // tonic-health starts "" as SERVING; until the checker task has looked, a probe arriving
    // at start-up must not see SERVING without a key set.
    for name in names {
        reporter
            .set_service_status(name, tonic_health::ServingStatus::NotServing)
            .await;
    }
    let checker = {
        let decider = Arc::clone(&decider);
        let mut close = close.clone();
        let mut draining = health.draining();
        async move {
            let mut last = None;
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                let (ready, _) = readiness(&decider, &health);
                if last != Some(ready) {
                    let status = if ready {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    for name in names {
                        reporter.set_service_status(name, status).await;
                    }
                    last = Some(ready);
                }
                // Key sets change on their own schedule (polled); shutdown is pushed, so
                // NOT_SERVING goes out the moment it begins.
                tokio::select! {
                    _ = tick.tick() => {}
                    () = until_true(&mut draining), if !*draining.borrow() => {}
                    () = until_true(&mut close) => return,
                }
            }
        }
    };
    let checker = tokio::spawn(checker);

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(pb::ENVOY_FILE_DESCRIPTOR_SET)
    };
    // v1 for current grpcurl and grpc tooling, v1alpha for older clients.
    let reflection_v1 = reflection().build_v1();
    let reflection_v1alpha = reflection().build_v1alpha();

    let max = MAX_MESSAGE_BYTES;
    let decider_limits = decider.config().limits.clone();
    let ext_authz = ExtAuthzServer::new(Arc::clone(&decider));
    let tokens = TokenServiceServer::new(Tokens { decider }).max_decoding_message_size(max);
    let limits_header_bytes = u32::try_from(MAX_MESSAGE_BYTES).unwrap_or(u32::MAX);

    let mut builder = tonic::transport::Server::builder()
        .http2_max_header_list_size(limits_header_bytes)
        .tcp_nodelay(true);
    let mut router = builder
        .add_service(health_service)
        .add_service(ext_authz)
        .add_service(tokens);
    match (reflection_v1, reflection_v1alpha) {
        (Ok(v1), Ok(v1alpha)) => router = router.add_service(v1).add_service(v1alpha),
        (Err(error), _) | (_, Err(error)) => {
            let error = &error as &dyn std::error::Error;
            tracing::warn!(error, "gRPC reflection unavailable");
        }
    }
    let incoming = limited_incoming(listener, &decider_limits, close.clone());
    let shutdown = {
        let mut close = close.clone();
        async move { until_true(&mut close).await }
    };
    let server = router.serve_with_incoming_shutdown(incoming, shutdown);
    tokio::pin!(server);
    // Serve until close; then give in-flight calls at most `drain_timeout` to finish.
    tokio::select! {
        result = &mut server => {
            if let Err(error) = result {
                let error = &error as &dyn std::error::Error;
                tracing::error!(error, "gRPC server failed");
            }
        }
        () = async {
            until_true(&mut close).await;
            tokio::time::sleep(drain_timeout).await;
        } => {
            tracing::warn!("gRPC drain timeout passed; closing remaining calls");
        }
    }
    checker.abort();
}

/// A gRPC connection holding one of the listener's connection slots until it closes.
struct SlotStream {
    stream: crate::shutdown::FirstBytesDeadline<tokio::net::TcpStream>,
    _slot: tokio::sync::OwnedSemaphorePermit,
    _open: OpenConnection,
}

/// Counts one open gRPC connection in [`crate::telemetry::OPEN_CONNECTIONS`] while alive.
struct OpenConnection(metrics::Gauge);

impl OpenConnection {
    fn new() -> Self {
        let gauge = metrics::gauge!(crate::telemetry::OPEN_CONNECTIONS, "listener" => "grpc");
        gauge.increment(1);
        Self(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1);
    }
}

impl tonic::transport::server::Connected for SlotStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.get_ref().connect_info()
    }
}

impl tokio::io::AsyncRead for SlotStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SlotStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Accepts gRPC connections while fewer than `limits.max_connections` are open (more wait in
/// the kernel's backlog), until `close` turns true.
fn limited_incoming(
    listener: tokio::net::TcpListener,
    limits: &crate::config::Limits,
    mut close: watch::Receiver<bool>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<SlotStream>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let first_bytes = limits.header_read_timeout;
    tokio::spawn(async move {
        loop {
            let slot = tokio::select! {
                slot = Arc::clone(&slots).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
                () = until_true(&mut close) => return,
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = until_true(&mut close) => return,
            };
            match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    // The HTTP/2 preface must come within the header timeout; after it, HTTP/2
                    // owns the connection (an idle close would race Envoy's next check).
                    let conn = SlotStream {
                        stream: crate::shutdown::FirstBytesDeadline::new(stream, first_bytes),
                        _slot: slot,
                        _open: OpenConnection::new(),
                    };
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(server = "grpc", %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
