//! Envoy ext_authz v3 `Authorization/Check`: Envoy's `CheckRequest` in, the core's `Decision`
//! out as a `CheckResponse`, with the status, challenge and body from `deny.rs`. A denial is a
//! `CheckResponse` (the RPC itself is OK), so Envoy denies even with `failure_mode_allow: true`;
//! for the same reason a message that does not decode becomes a denied check, not an RPC error.

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    CheckRequest as EnvoyCheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus,
};
use envoy_types::pb::envoy::config::core::v3::address;
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

use super::{MAX_MESSAGE_BYTES, check_response};
use crate::cert::ClientCert;
use crate::decision::{Allow, CheckRequest, Decision, Deny, Frontend, could_pose_as_owned};
use crate::deny;
use crate::live::Live;
use crate::server::PeerAddr;
use crate::token::split_joined_credentials_owned;

/// The ext_authz server. It is tonic's generated `AuthorizationServer` in all but the decoder: a
/// CheckRequest that does not decode (invalid UTF-8 in a header value a client sent, an
/// oversized message) becomes an empty CheckRequest, which is denied as `malformed_check`. An
/// RPC error instead would let `failure_mode_allow: true` turn the client's garbage into an
/// allow.
#[derive(Debug, Clone)]
pub struct ExtAuthzServer {
    live: Arc<Live>,
    /// The proxy's address, where the port's accept loop passed it; else it is read from the
    /// request's extensions ([`PeerAddr`]).
    peer: Option<SocketAddr>,
}

/// The path of `Check`.
pub(crate) const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

impl ExtAuthzServer {
    /// The server for this decider.
    pub fn new(live: Arc<Live>) -> Self {
        Self { live, peer: None }
    }

    /// The server for a request from `peer`.
    pub(crate) fn with_peer(self, peer: SocketAddr) -> Self {
        Self {
            peer: Some(peer),
            ..self
        }
    }

    async fn check(&self, request: Request<EnvoyCheckRequest>) -> Reply {
        // This check runs on the config it starts with, whatever a reload does meanwhile.
        let decider = self.live.get();
        let config = decider.config();
        // Trust is a property of the connection (the proxy), not of the addresses inside the
        // message, which the message's author chose.
        let proxy = self
            .peer
            .or_else(|| request.extensions().get::<PeerAddr>().map(|p| p.0))
            .map(|p| p.ip());
        let check = CheckRequest {
            proxy,
            ..to_check_request(
                request.into_inner(),
                config.limits.max_header_bytes,
                decider.token_source_headers(),
            )
        };
        match decider.decide(&check).await {
            Decision::Allow(allow) => Reply::Allow(allow),
            Decision::Deny(deny) => Reply::Message(deny_response(&deny, decider.challenges())),
        }
    }
}

impl tonic::server::NamedService for ExtAuthzServer {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

/// The client certificate Envoy passes with `include_peer_certificate: true`: URL-encoded PEM in
/// `attributes.source.certificate`.
fn client_cert(req: &EnvoyCheckRequest) -> Option<ClientCert> {
    let certificate = &req.attributes.as_ref()?.source.as_ref()?.certificate;
    (!certificate.is_empty()).then(|| ClientCert::Encoded(certificate.clone()))
}

fn client_ip(req: &EnvoyCheckRequest) -> Option<std::net::IpAddr> {
    let address = req.attributes.as_ref()?.source.as_ref()?.address.as_ref()?;
    match address.address.as_ref()? {
        address::Address::SocketAddress(sa) => sa.address.parse().ok(),
        _ => None,
    }
}

/// Translates Envoy's CheckRequest. Envoy joins repeated headers with `,` in the `headers` map;
/// `split_joined_credentials` takes them apart again where a new credential starts.
fn to_check_request(
    mut req: EnvoyCheckRequest,
    max_header_bytes: usize,
    token_sources: &[http::HeaderName],
) -> CheckRequest {
    let mut check = CheckRequest {
        client: client_ip(&req),
        client_cert: client_cert(&req),
        ..CheckRequest::new(Frontend::Grpc)
    };
    let Some(http) = req
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    else {
        check.malformed = true;
        return check;
    };
    let mut header_bytes = 0usize;
    let mut authorization = Vec::new();
    let mut header_names = Vec::new();
    let mut token_headers = Vec::new();
    for (name, value) in &mut http.headers {
        header_bytes += name.len() + value.len();
        if could_pose_as_owned(name) {
            header_names.push(name.clone());
        }
        if let Some(source) = token_sources
            .iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name))
        {
            token_headers.push((source.clone(), value.as_bytes().to_vec()));
        }
        if name.eq_ignore_ascii_case("authorization") {
            // The message is ours: the value moves into the check instead of being copied.
            let value = std::mem::take(value).into_bytes();
            authorization.extend(split_joined_credentials_owned(value));
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
            if could_pose_as_owned(&h.key) {
                header_names.push(h.key.clone());
            }
            if let Some(source) = token_sources
                .iter()
                .find(|s| s.as_str().eq_ignore_ascii_case(&h.key))
            {
                token_headers.push((source.clone(), value.to_vec()));
            }
        }
    }
    if http.path.is_empty() || header_bytes > max_header_bytes {
        check.malformed = true;
        return check;
    }
    check.method = Some(http.method.to_ascii_uppercase()).filter(|m| !m.is_empty());
    check.host = Some(http.host.clone()).filter(|h| !h.is_empty());
    check.scheme = Some(http.scheme.to_ascii_lowercase()).filter(|s| !s.is_empty());
    check.path = Some(http.path.clone());
    check.authorization = authorization;
    check.header_names = header_names;
    check.token_headers = token_headers;
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

fn deny_response(deny: &Deny, challenges: &deny::Challenges) -> CheckResponse {
    let answer = deny::answer(deny, Frontend::Grpc, challenges);
    let mut headers = vec![
        header("content-type", "text/plain; charset=utf-8"),
        header("cache-control", "no-store"),
    ];
    if let Some(challenge) = &answer.challenge {
        headers.push(header("www-authenticate", challenge));
    }
    if let Some(secs) = answer.retry_after {
        headers.push(header("retry-after", &secs.to_string()));
    }
    CheckResponse {
        status: Some(rpc::Status {
            code: answer.grpc_code as i32,
            message: deny.reason.as_str().to_owned(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(answer.status.as_u16()),
            }),
            headers,
            body: answer.body.to_owned(),
        })),
        dynamic_metadata: None,
    }
}

/// What a Check answers: an allow, written by [`check_response`] straight from the decision,
/// or a message built the generated way (denials).
#[derive(Debug)]
enum Reply {
    Allow(Allow),
    Message(CheckResponse),
}

/// Encodes [`Reply`]s.
#[derive(Debug, Default)]
struct ReplyEncoder;

impl tonic::codec::Encoder for ReplyEncoder {
    type Item = Reply;
    type Error = Status;

    fn encode(
        &mut self,
        reply: Reply,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        match reply {
            Reply::Allow(allow) => {
                buf.reserve(check_response::encoded_len(&allow));
                check_response::encode(&allow, buf);
            }
            Reply::Message(message) => {
                buf.reserve(prost::Message::encoded_len(&message));
                prost::Message::encode(&message, buf)
                    .map_err(|error| Status::internal(error.to_string()))?;
            }
        }
        Ok(())
    }

    /// A CheckResponse is a few hundred bytes; tonic's default of 8 KiB per call is an
    /// allocation past the allocator's fast path for every check (2.5 % of a Check's CPU in a
    /// profile). The buffer grows as needed.
    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        tonic::codec::BufferSettings::new(1024, 32 * 1024)
    }
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
    type Encode = Reply;
    type Decode = EnvoyCheckRequest;
    type Encoder = ReplyEncoder;
    type Decoder = LenientDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ReplyEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        LenientDecoder
    }
}

struct CheckMethod(ExtAuthzServer);

impl tonic::server::UnaryService<EnvoyCheckRequest> for CheckMethod {
    type Response = Reply;
    type Future = tonic::codegen::BoxFuture<Response<Reply>, Status>;

    fn call(&mut self, request: Request<EnvoyCheckRequest>) -> Self::Future {
        let server = self.0.clone();
        Box::pin(async move { Ok(Response::new(server.check(request).await)) })
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
        if request.uri().path() != CHECK_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let server = self.clone();
        Box::pin(async move {
            // The transport bound; anything between it and MAX_MESSAGE_BYTES is denied by the
            // decoder instead of failing the RPC.
            let mut grpc = tonic::server::Grpc::new(LenientCodec)
                .apply_max_message_size_config(Some(16 * MAX_MESSAGE_BYTES), None);
            Ok(grpc.unary(CheckMethod(server), request).await)
        })
    }
}
