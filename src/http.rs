//! The HTTP mouth (axum): `/auth` for Traefik ForwardAuth and other forward-auth callers,
//! `/auth/nginx` for nginx `auth_request`, and `/envoy/*` for Envoy's ext_authz HTTP mode. Each
//! handler converts the proxy's request into a `CheckRequest` and the `Decision` into a response
//! per the table in DESIGN.md; nothing here decides.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::decision::{CheckRequest, Decider, Decision, Deny, DenyKind, Frontend};
use crate::token::split_joined_credentials;

/// The peer address of a connection, inserted by the server loop.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// How a frontend presents denials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    /// Statuses as they are: 400, 401, 403, 503.
    Plain,
    /// Envoy's HTTP mode treats a 5xx from the auth service as an error, which
    /// `failure_mode_allow` would turn into an allow: 503 becomes 401, 400 stays.
    NoServerErrors,
    /// nginx turns anything but 2xx/401/403 into a 500: 400 and 503 become 401.
    Only401And403,
}

/// The router of the forward-auth port.
pub fn router(decider: Arc<Decider>) -> Router {
    let prefix = decider.config().http.envoy_prefix.clone();
    Router::new()
        .route("/auth", any(forward_auth))
        .route("/auth/nginx", any(nginx))
        .route(&prefix, any(envoy))
        .route(&format!("{prefix}/"), any(envoy))
        .route(&format!("{prefix}/{{*rest}}"), any(envoy))
        .with_state(decider)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
}

/// The original URI a proxy forwarded in `name`: `Err` when the header is there but is not
/// visible ASCII, which the core denies as malformed rather than treat as "no path given"
/// (that would skip path rules, deny rules included).
fn original_uri(headers: &HeaderMap, name: &str) -> Result<Option<String>, ()> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.to_owned())).map_err(|_| ()),
    }
}

fn check_request(frontend: Frontend, req: &Request) -> CheckRequest {
    CheckRequest {
        frontend,
        method: None,
        host: None,
        path: None,
        authorization: req
            .headers()
            .get_all(AUTHORIZATION)
            .iter()
            .flat_map(|v| split_joined_credentials(v.as_bytes()))
            .collect(),
        peer: req.extensions().get::<PeerAddr>().map(|p| p.0.ip()),
        malformed: false,
    }
}

async fn forward_auth(State(decider): State<Arc<Decider>>, req: Request) -> Response {
    let h = req.headers();
    let uri = original_uri(h, "x-forwarded-uri");
    let check = CheckRequest {
        method: header_str(h, "x-forwarded-method").map(str::to_ascii_uppercase),
        host: header_str(h, "x-forwarded-host").map(str::to_owned),
        malformed: uri.is_err(),
        path: uri.unwrap_or_default(),
        ..check_request(Frontend::ForwardAuth, &req)
    };
    respond(&decider, &check, Profile::Plain).await
}

async fn nginx(State(decider): State<Arc<Decider>>, req: Request) -> Response {
    let h = req.headers();
    let uri = original_uri(h, "x-original-uri");
    let check = CheckRequest {
        method: header_str(h, "x-original-method").map(str::to_ascii_uppercase),
        host: header_str(h, "x-original-host")
            .or_else(|| header_str(h, "x-forwarded-host"))
            .or_else(|| header_str(h, HOST.as_str()))
            .map(str::to_owned),
        malformed: uri.is_err(),
        path: uri.unwrap_or_default(),
        ..check_request(Frontend::Nginx, &req)
    };
    respond(&decider, &check, Profile::Only401And403).await
}

async fn envoy(State(decider): State<Arc<Decider>>, req: Request) -> Response {
    let prefix = decider.config().http.envoy_prefix.as_str();
    let uri = req.uri();
    let path = uri.path().strip_prefix(prefix).unwrap_or("");
    let path = if path.is_empty() { "/" } else { path };
    let path = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let host = header_str(req.headers(), HOST.as_str())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .map(str::to_owned);
    let check = CheckRequest {
        method: Some(req.method().as_str().to_owned()),
        host,
        path: Some(path),
        ..check_request(Frontend::EnvoyHttp, &req)
    };
    respond(&decider, &check, Profile::NoServerErrors).await
}

/// Envoy's HTTP mode removes the request headers named here (comma-separated) before the
/// request goes upstream: the HTTP-mode twin of the gRPC `headers_to_remove`.
const ENVOY_HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

async fn respond(decider: &Decider, check: &CheckRequest, profile: Profile) -> Response {
    let untrusted;
    let check = if decider.config().trusts_peer(check.peer) {
        check
    } else {
        untrusted = check.clone().without_request_attributes();
        &untrusted
    };
    let realm = decider.config().http.realm.as_str();
    match decider.decide(check).await {
        Decision::Allow(allow) => {
            let mut response = StatusCode::OK.into_response();
            let headers = response.headers_mut();
            // Envoy's HTTP mode is the one mouth that can be told to remove request headers.
            // Traefik and nginx drop owned headers by their own config (deploy/).
            if check.frontend == Frontend::EnvoyHttp {
                let remove = allow.headers_to_remove(&decider.config().token);
                if !remove.is_empty()
                    && let Ok(value) = HeaderValue::from_str(&remove.join(", "))
                {
                    headers.insert(ENVOY_HEADERS_TO_REMOVE, value);
                }
            }
            for (name, value) in allow.headers {
                headers.insert(name, value);
            }
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Decision::Deny(deny) => deny_response(&deny, profile, realm),
    }
}

/// The challenge for a denial (RFC 6750 §3), or `None` where no challenge applies.
pub fn challenge(deny: &Deny, realm: &str) -> Option<String> {
    let error = match deny.kind() {
        DenyKind::Unauthenticated | DenyKind::Unavailable => {
            return Some(format!("Bearer realm=\"{realm}\""));
        }
        DenyKind::Forbidden => return None,
        DenyKind::InvalidToken => ("invalid_token", "the access token is invalid"),
        DenyKind::InvalidRequest => ("invalid_request", "the request is malformed"),
        DenyKind::InsufficientScope => (
            "insufficient_scope",
            "the access token does not grant access to this resource",
        ),
    };
    let mut value = format!(
        "Bearer realm=\"{realm}\", error=\"{}\", error_description=\"{}\"",
        error.0, error.1
    );
    if let Some(scope) = &deny.scope {
        value.push_str(&format!(", scope=\"{scope}\""));
    }
    Some(value)
}

/// The fixed message a client sees for a denial kind.
pub fn message(kind: DenyKind) -> &'static str {
    match kind {
        DenyKind::Unauthenticated => "authentication required",
        DenyKind::InvalidToken => "invalid token",
        DenyKind::InvalidRequest => "malformed request",
        DenyKind::InsufficientScope => "insufficient scope",
        DenyKind::Forbidden => "forbidden",
        DenyKind::Unavailable => "authentication temporarily unavailable",
    }
}

fn deny_response(deny: &Deny, profile: Profile, realm: &str) -> Response {
    let kind = deny.kind();
    let status = match (kind, profile) {
        (DenyKind::Unauthenticated | DenyKind::InvalidToken, _) => StatusCode::UNAUTHORIZED,
        (DenyKind::InsufficientScope | DenyKind::Forbidden, _) => StatusCode::FORBIDDEN,
        (DenyKind::InvalidRequest, Profile::Plain | Profile::NoServerErrors) => {
            StatusCode::BAD_REQUEST
        }
        (DenyKind::Unavailable, Profile::Plain) => StatusCode::SERVICE_UNAVAILABLE,
        (DenyKind::InvalidRequest, Profile::Only401And403)
        | (DenyKind::Unavailable, Profile::NoServerErrors | Profile::Only401And403) => {
            StatusCode::UNAUTHORIZED
        }
    };
    let mut response = Response::new(Body::from(message(kind)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // A 401 must carry a challenge (RFC 9110 §15.5.2), whatever the kind that led to it.
    let challenge = challenge(deny, realm).or_else(|| {
        (status == StatusCode::UNAUTHORIZED).then(|| format!("Bearer realm=\"{realm}\""))
    });
    if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(WWW_AUTHENTICATE, value);
    }
    if let Some(secs) = deny.retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::DenyReason;

    fn deny(reason: DenyReason) -> Deny {
        Deny {
            reason,
            scope: (reason == DenyReason::InsufficientScope).then(|| "admin".to_owned()),
            retry_after: (reason.kind() == DenyKind::Unavailable).then_some(5),
        }
    }

    fn parts(reason: DenyReason, profile: Profile) -> (u16, Option<String>, Option<String>) {
        let r = deny_response(&deny(reason), profile, "authgate");
        let get = |name| {
            r.headers()
                .get(name)
                .map(|v: &HeaderValue| v.to_str().expect("ascii").to_owned())
        };
        (r.status().as_u16(), get(WWW_AUTHENTICATE), get(RETRY_AFTER))
    }

    #[test]
    fn statuses_follow_the_response_table_for_every_profile() {
        use DenyReason::*;
        // (reason, /auth status, /envoy status, /auth/nginx status)
        let table = [
            (MissingToken, 401, 401, 401),
            (BadSignature, 401, 401, 401),
            (MultipleTokens, 400, 400, 401),
            (InsufficientScope, 403, 403, 403),
            (RouteDenied, 403, 403, 403),
            (KeysUnavailable, 503, 401, 401),
            (Overloaded, 503, 401, 401),
        ];
        for (reason, plain, envoy, nginx) in table {
            assert_eq!(parts(reason, Profile::Plain).0, plain, "{reason}");
            assert_eq!(parts(reason, Profile::NoServerErrors).0, envoy, "{reason}");
            assert_eq!(parts(reason, Profile::Only401And403).0, nginx, "{reason}");
        }
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        use DenyReason::*;
        let challenge = |r| parts(r, Profile::Plain).1;
        assert_eq!(
            challenge(MissingToken).as_deref(),
            Some(r#"Bearer realm="authgate""#)
        );
        assert!(
            challenge(Expired)
                .expect("challenge")
                .contains(r#"error="invalid_token""#)
        );
        assert!(
            challenge(EmptyToken)
                .expect("challenge")
                .contains(r#"error="invalid_request""#)
        );
        let scope = challenge(InsufficientScope).expect("challenge");
        assert!(
            scope.contains(r#"error="insufficient_scope""#) && scope.contains(r#"scope="admin""#)
        );
        assert_eq!(challenge(RouteDenied), None);
        let nginx = parts(EmptyToken, Profile::Only401And403);
        assert!(
            nginx
                .1
                .expect("challenge")
                .contains(r#"error="invalid_request""#)
        );
    }

    #[test]
    fn unavailable_answers_carry_retry_after_and_a_challenge_when_401() {
        for profile in [Profile::NoServerErrors, Profile::Only401And403] {
            let (status, challenge, retry) = parts(DenyReason::KeysUnavailable, profile);
            assert_eq!(status, 401, "{profile:?}");
            assert_eq!(
                challenge.as_deref(),
                Some(r#"Bearer realm="authgate""#),
                "{profile:?}"
            );
            assert_eq!(retry.as_deref(), Some("5"), "{profile:?}");
        }
        assert_eq!(parts(DenyReason::Expired, Profile::Plain).2, None);
    }
}
