//! The HTTP mouth: `/auth` for Traefik ForwardAuth and other forward-auth callers,
//! `/auth/nginx` for nginx `auth_request`, and `/envoy/*` for Envoy's ext_authz HTTP mode. Each
//! handler converts the proxy's request into a `CheckRequest` and the `Decision` into a response
//! per the table in DESIGN.md; nothing here decides.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use hyper::body::Incoming;

use crate::cert::ClientCert;
use crate::decision::{CheckRequest, Decider, Decision, Frontend, could_pose_as_owned};
use crate::deny;
use crate::live::Live;
use crate::server::Mouth;
use crate::token::split_joined_credentials;

/// The forward-auth port: `/auth`, `/auth/nginx` and the Envoy prefix are answered straight from
/// the request (no router, no extensions: these are the paths every check takes); the rest
/// (RFC 9728 metadata, 404s) goes through an axum router.
pub fn mouth(live: Arc<Live>) -> HttpMouth {
    let prefix = live.get().config().http.envoy_prefix.clone();
    let router = Router::new()
        .route(RESOURCE_METADATA_PATH, get(resource_metadata))
        .route(
            &format!("{RESOURCE_METADATA_PATH}/{{*rest}}"),
            get(resource_metadata),
        )
        .with_state(Arc::clone(&live));
    HttpMouth(Arc::new(MouthInner {
        live,
        envoy_prefix: prefix,
        router,
    }))
}

/// See [`mouth`].
#[derive(Debug, Clone)]
pub struct HttpMouth(Arc<MouthInner>);

#[derive(Debug)]
struct MouthInner {
    live: Arc<Live>,
    /// `http.envoy_prefix`, which a reload cannot change.
    envoy_prefix: String,
    router: Router,
}

impl MouthInner {
    /// The mouth a path belongs to, `None` for the router's paths.
    fn frontend(&self, path: &str) -> Option<Frontend> {
        match path {
            "/auth" => Some(Frontend::ForwardAuth),
            "/auth/nginx" => Some(Frontend::Nginx),
            _ if path.starts_with(RESOURCE_METADATA_PATH) => None,
            _ => path
                .strip_prefix(self.envoy_prefix.as_str())
                .filter(|rest| rest.is_empty() || rest.starts_with('/'))
                .map(|_| Frontend::EnvoyHttp),
        }
    }
}

impl Mouth for HttpMouth {
    fn answer(
        self,
        req: hyper::Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response> + Send + 'static {
        let mouth = self.0;
        async move {
            let Some(frontend) = mouth.frontend(req.uri().path()) else {
                return mouth.router.clone().answer(req, peer).await;
            };
            // This check runs on the config it starts with, whatever a reload does meanwhile.
            let decider = mouth.live.get();
            let proxy = Some(peer.ip());
            let check = match frontend {
                Frontend::ForwardAuth => forward_auth(&req, proxy, &decider),
                Frontend::Nginx => nginx(&req, proxy, &decider),
                _ => envoy(&req, proxy, &decider),
            };
            respond(&decider, &check).await
        }
    }
}

/// Where RFC 9728 §3 puts protected-resource metadata.
pub const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// `GET /.well-known/oauth-protected-resource[/path]`: the RFC 9728 document, where
/// `resource_metadata` is configured (at the pinned path, and at the path RFC 9728 §3.1 forms
/// from a resource that has one); 404 otherwise.
async fn resource_metadata(State(live): State<Arc<Live>>, req: axum::extract::Request) -> Response {
    let decider = live.get();
    let config = decider.config();
    let Some(metadata) = config
        .resource_metadata
        .as_ref()
        .filter(|m| req.uri().path() == RESOURCE_METADATA_PATH || req.uri().path() == m.path)
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut document = serde_json::Map::new();
    document.insert("resource".into(), metadata.resource.clone().into());
    if !metadata.authorization_servers.is_empty() {
        document.insert(
            "authorization_servers".into(),
            metadata.authorization_servers.clone().into(),
        );
    }
    if !metadata.scopes_supported.is_empty() {
        document.insert(
            "scopes_supported".into(),
            metadata.scopes_supported.clone().into(),
        );
    }
    // How a token may be sent: what the top-level token sources read (RFC 9728 §2 knows
    // header, body and query; cookies and custom headers have no name there).
    let mut methods = Vec::new();
    if config.token.header {
        methods.push("header");
    }
    if config.token.query.is_some() {
        methods.push("query");
    }
    document.insert("bearer_methods_supported".into(), methods.into());
    if let Some(algs) = &decider.challenges().dpop_algs {
        let algs: Vec<&str> = algs.split(' ').collect();
        document.insert("dpop_signing_alg_values_supported".into(), algs.into());
        document.insert(
            "dpop_bound_access_tokens_required".into(),
            (!decider.challenges().bearer).into(),
        );
    }
    let mut response = axum::Json(document).into_response();
    response.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

// The headers the mouths read, named once (a lookup by `HeaderName` skips parsing the name).
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_ORIGINAL_HOST: HeaderName = HeaderName::from_static("x-original-host");

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
}

/// The original URI a proxy forwarded in `name`: `Err` when the header is there but is not
/// visible ASCII, which the core denies as malformed rather than treat as "no path given"
/// (that would skip path rules, deny rules included).
fn original_uri(headers: &HeaderMap, name: &HeaderName) -> Result<Option<String>, ()> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.to_owned())).map_err(|_| ()),
    }
}

/// The original request's scheme from `X-Forwarded-Proto` (its last value, the one the nearest
/// proxy set), lower-case.
fn forwarded_proto(headers: &HeaderMap) -> Option<String> {
    let last = headers.get_all(&X_FORWARDED_PROTO).iter().next_back()?;
    let proto = last.to_str().ok()?.rsplit(',').next()?.trim();
    (!proto.is_empty()).then(|| proto.to_ascii_lowercase())
}

/// The client address the proxy appended last to `X-Forwarded-For`.
fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers.get_all(&X_FORWARDED_FOR).iter().next_back()?;
    last.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()
}

/// What every HTTP mouth reads the same way: the Authorization values (split where a proxy
/// joined repeated headers), the proxy's address, the client's, and the client certificate
/// from `client_cert_header` (in Envoy's HTTP mode also from `x-forwarded-client-cert`).
fn check_request<B>(
    frontend: Frontend,
    req: &Request<B>,
    proxy: Option<IpAddr>,
    decider: &Decider,
) -> CheckRequest {
    let cert = decider
        .config()
        .client_cert_header
        .as_ref()
        .and_then(|name| header_str(req.headers(), name))
        .map(|value| ClientCert::Encoded(value.to_owned()));
    let cert = match (cert, frontend) {
        (None, Frontend::EnvoyHttp) => {
            header_str(req.headers(), &X_FORWARDED_CLIENT_CERT).and_then(ClientCert::from_xfcc)
        }
        (cert, _) => cert,
    };
    let token_headers = decider
        .token_source_headers()
        .iter()
        .flat_map(|name| {
            req.headers()
                .get_all(name)
                .iter()
                .map(|value| (name.clone(), value.as_bytes().to_vec()))
        })
        .collect();
    CheckRequest {
        client_cert: cert,
        token_headers,
        authorization: req
            .headers()
            .get_all(AUTHORIZATION)
            .iter()
            .flat_map(|v| split_joined_credentials(v.as_bytes()))
            .collect(),
        proxy,
        client: forwarded_for(req.headers()),
        ..CheckRequest::new(frontend)
    }
}

/// Traefik ForwardAuth and other forward-auth callers: the original request in `X-Forwarded-*`.
fn forward_auth<B>(req: &Request<B>, proxy: Option<IpAddr>, decider: &Decider) -> CheckRequest {
    let h = req.headers();
    let uri = original_uri(h, &X_FORWARDED_URI);
    CheckRequest {
        method: header_str(h, &X_FORWARDED_METHOD).map(str::to_ascii_uppercase),
        host: header_str(h, &X_FORWARDED_HOST).map(str::to_owned),
        scheme: forwarded_proto(h),
        malformed: uri.is_err(),
        path: uri.unwrap_or_default(),
        ..check_request(Frontend::ForwardAuth, req, proxy, decider)
    }
}

/// nginx `auth_request`: the original request in `X-Original-*`.
fn nginx<B>(req: &Request<B>, proxy: Option<IpAddr>, decider: &Decider) -> CheckRequest {
    let h = req.headers();
    let uri = original_uri(h, &X_ORIGINAL_URI);
    CheckRequest {
        method: header_str(h, &X_ORIGINAL_METHOD).map(str::to_ascii_uppercase),
        scheme: forwarded_proto(h),
        host: header_str(h, &X_ORIGINAL_HOST)
            .or_else(|| header_str(h, &X_FORWARDED_HOST))
            .or_else(|| header_str(h, &HOST))
            .map(str::to_owned),
        malformed: uri.is_err(),
        path: uri.unwrap_or_default(),
        ..check_request(Frontend::Nginx, req, proxy, decider)
    }
}

/// Envoy's ext_authz HTTP mode: the original request itself, its path under the prefix.
fn envoy<B>(req: &Request<B>, proxy: Option<IpAddr>, decider: &Decider) -> CheckRequest {
    let prefix = decider.config().http.envoy_prefix.as_str();
    let uri = req.uri();
    let path = uri.path().strip_prefix(prefix).unwrap_or("");
    let path = if path.is_empty() { "/" } else { path };
    let path = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let host = header_str(req.headers(), &HOST)
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .map(str::to_owned);
    CheckRequest {
        method: Some(req.method().as_str().to_owned()),
        // Envoy sets x-forwarded-proto on the request it checks (deploy/ passes it on).
        scheme: forwarded_proto(req.headers()),
        host,
        path: Some(path),
        // The client's headers that Envoy passed on (its `allowed_headers`).
        header_names: req
            .headers()
            .keys()
            .map(|k| k.as_str())
            .filter(|k| could_pose_as_owned(k))
            .map(str::to_owned)
            .collect(),
        ..check_request(Frontend::EnvoyHttp, req, proxy, decider)
    }
}

/// Envoy's HTTP mode removes the request headers named here (comma-separated) before the
/// request goes upstream: the HTTP-mode twin of the gRPC `headers_to_remove`.
const ENVOY_HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

async fn respond(decider: &Decider, check: &CheckRequest) -> Response {
    match decider.decide(check).await {
        Decision::Allow(allow) => {
            let mut response = StatusCode::OK.into_response();
            let headers = response.headers_mut();
            // Envoy's HTTP mode is the one HTTP mouth that can be told to remove request
            // headers. Traefik and nginx drop owned headers by their own config (deploy/).
            if check.frontend == Frontend::EnvoyHttp
                && !allow.headers_to_remove.is_empty()
                && let Ok(value) = HeaderValue::from_str(
                    &allow
                        .headers_to_remove
                        .iter()
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            {
                headers.insert(ENVOY_HEADERS_TO_REMOVE, value);
            }
            for (name, value) in allow.headers {
                headers.insert(name, value);
            }
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Decision::Deny(d) => deny_response(&deny::answer(&d, check.frontend, decider.challenges())),
    }
}

fn deny_response(answer: &deny::DenyAnswer) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(value) = answer
        .challenge
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        headers.insert(WWW_AUTHENTICATE, value);
    }
    if let Some(secs) = answer.retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}
