//! THE CORE: one `CheckRequest` in, one `Decision` out. Every mouth (forward-auth HTTP, Envoy
//! HTTP, ext_authz gRPC) translates into a `CheckRequest` and maps the `Decision` back; only this
//! module decides. No axum, tonic or reqwest in here. `decide()` cannot fail: a denial is a value
//! with a `DenyReason`, and each reason maps once to a `DenyKind` that the adapters turn into a
//! status.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::claims::{claim_headers, granted_scopes};
use crate::config::{
    AudienceMatch, Config, IssuerConfig, PathMatch, Requirement, Route, RouteAction, TokenConfig,
};
use crate::keys::{KeyHealth, KeyLookup, KeySource, VerifyingKey};
use crate::telemetry;
use crate::token::{TokenSource, find_token};
use crate::verify::{FormatError, numeric_date, parse_compact, signature_valid};
use futures_util::FutureExt as _;
use std::panic::AssertUnwindSafe;

/// Which mouth a check came through (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    /// `/auth`: Traefik ForwardAuth and other forward-auth callers.
    ForwardAuth,
    /// `/auth/nginx`: nginx auth_request.
    Nginx,
    /// `/envoy/*`: Envoy ext_authz HTTP mode.
    EnvoyHttp,
    /// Envoy ext_authz gRPC.
    Grpc,
    /// `authgate.v1.TokenService/Verify`.
    TokenService,
}

impl Frontend {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Frontend::ForwardAuth => "forward_auth",
            Frontend::Nginx => "nginx",
            Frontend::EnvoyHttp => "envoy_http",
            Frontend::Grpc => "grpc",
            Frontend::TokenService => "token_service",
        }
    }
}

/// What the core needs to know about the ORIGINAL request the proxy asks about.
#[derive(Debug, Clone)]
pub struct CheckRequest {
    /// The mouth it came through.
    pub frontend: Frontend,
    /// Upper-case method, if the proxy told.
    pub method: Option<String>,
    /// Host, possibly with a port, if the proxy told.
    pub host: Option<String>,
    /// Path and query of the original request, if the proxy told.
    pub path: Option<String>,
    /// Every `Authorization` header value, in order.
    pub authorization: Vec<Vec<u8>>,
    /// The peer that asked (the proxy), for logs.
    pub peer: Option<IpAddr>,
    /// The adapter could not translate the proxy's request in full (no HTTP attributes, an
    /// oversized header map): it is denied as a malformed request, never guessed at.
    pub malformed: bool,
}

impl CheckRequest {
    /// This request with what a peer outside `trusted_proxies` said about the original request
    /// (method, host, path) forgotten: route rules that need them deny it as malformed.
    pub fn without_request_attributes(self) -> Self {
        Self {
            method: None,
            host: None,
            path: None,
            ..self
        }
    }

    /// An empty GET / request for tests.
    pub fn for_test() -> Self {
        Self {
            frontend: Frontend::ForwardAuth,
            method: Some("GET".to_owned()),
            host: Some("api.example.com".to_owned()),
            path: Some("/".to_owned()),
            authorization: Vec::new(),
            peer: None,
            malformed: false,
        }
    }
}

/// Why a check was denied. A closed set: it is also the `reason` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// No token in any enabled source.
    MissingToken,
    /// `Bearer` with nothing after it, or an empty query token.
    EmptyToken,
    /// More than one token (two Authorization headers, header and query).
    MultipleTokens,
    /// Control or non-ASCII bytes in the Authorization header.
    MalformedAuthorization,
    /// The proxy's check request itself is incomplete or over its limits.
    MalformedCheck,
    /// The original path could be read differently by the upstream (encoded `/`, `..` above
    /// the root, `;`, backslashes) while route rules depend on the path.
    AmbiguousPath,
    /// Longer than the token size cap.
    TokenTooLarge,
    /// Not a well-formed compact JWS.
    MalformedToken,
    /// `alg` is none, symmetric, unknown, or not allowed for the issuer.
    AlgorithmNotAllowed,
    /// A `crit` header names extensions authgate does not understand.
    UnsupportedCritical,
    /// A registered claim has the wrong type.
    MalformedClaims,
    /// `iss` is missing or not a configured issuer.
    UnknownIssuer,
    /// The issuer is configured but not accepted on this route.
    IssuerNotAllowed,
    /// `typ` is not one of the accepted values.
    WrongTokenType,
    /// No `exp` claim.
    MissingExpiry,
    /// `exp` is past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    IssuedInFuture,
    /// `aud` does not match.
    WrongAudience,
    /// No key with the token's `kid`.
    UnknownKey,
    /// The `kid` names more than one key.
    AmbiguousKey,
    /// The key cannot verify the token's algorithm.
    KeyAlgorithmMismatch,
    /// The signature does not verify.
    BadSignature,
    /// A required scope is missing.
    InsufficientScope,
    /// A required claim value is missing.
    ClaimMismatch,
    /// A route rule denies the request.
    RouteDenied,
    /// No usable key set (IdP unreachable at start, or keys past max_stale).
    KeysUnavailable,
    /// The per-check deadline passed while waiting for keys.
    DeadlineExceeded,
    /// The concurrency limit shed the check.
    Overloaded,
    /// The decision failed inside authgate (a bug); denied, never allowed.
    InternalError,
}

/// How a denial is presented; each adapter maps a kind once to its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyKind {
    /// No token: 401 with a bare challenge.
    Unauthenticated,
    /// Bad token: 401 `invalid_token`.
    InvalidToken,
    /// Malformed request: 400 `invalid_request`.
    InvalidRequest,
    /// Token lacks scope or claims: 403 `insufficient_scope`.
    InsufficientScope,
    /// Policy says no: 403 without an error code.
    Forbidden,
    /// Keys unavailable or overloaded: fail closed, with `Retry-After`.
    Unavailable,
}

impl DenyReason {
    /// Every reason, for exhaustive tests and documentation.
    pub const ALL: [DenyReason; 30] = [
        DenyReason::MissingToken,
        DenyReason::EmptyToken,
        DenyReason::MultipleTokens,
        DenyReason::MalformedAuthorization,
        DenyReason::MalformedCheck,
        DenyReason::AmbiguousPath,
        DenyReason::TokenTooLarge,
        DenyReason::MalformedToken,
        DenyReason::AlgorithmNotAllowed,
        DenyReason::UnsupportedCritical,
        DenyReason::MalformedClaims,
        DenyReason::UnknownIssuer,
        DenyReason::IssuerNotAllowed,
        DenyReason::WrongTokenType,
        DenyReason::MissingExpiry,
        DenyReason::Expired,
        DenyReason::NotYetValid,
        DenyReason::IssuedInFuture,
        DenyReason::WrongAudience,
        DenyReason::UnknownKey,
        DenyReason::AmbiguousKey,
        DenyReason::KeyAlgorithmMismatch,
        DenyReason::BadSignature,
        DenyReason::InsufficientScope,
        DenyReason::ClaimMismatch,
        DenyReason::RouteDenied,
        DenyReason::KeysUnavailable,
        DenyReason::DeadlineExceeded,
        DenyReason::Overloaded,
        DenyReason::InternalError,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        use DenyReason::*;
        match self {
            MissingToken => "missing_token",
            EmptyToken => "empty_token",
            MultipleTokens => "multiple_tokens",
            MalformedAuthorization => "malformed_authorization",
            MalformedCheck => "malformed_check",
            AmbiguousPath => "ambiguous_path",
            TokenTooLarge => "token_too_large",
            MalformedToken => "malformed_token",
            AlgorithmNotAllowed => "algorithm_not_allowed",
            UnsupportedCritical => "unsupported_critical_header",
            MalformedClaims => "malformed_claims",
            UnknownIssuer => "unknown_issuer",
            IssuerNotAllowed => "issuer_not_allowed",
            WrongTokenType => "wrong_token_type",
            MissingExpiry => "missing_expiry",
            Expired => "expired",
            NotYetValid => "not_yet_valid",
            IssuedInFuture => "issued_in_future",
            WrongAudience => "wrong_audience",
            UnknownKey => "unknown_key",
            AmbiguousKey => "ambiguous_key",
            KeyAlgorithmMismatch => "key_algorithm_mismatch",
            BadSignature => "bad_signature",
            InsufficientScope => "insufficient_scope",
            ClaimMismatch => "claim_mismatch",
            RouteDenied => "route_denied",
            KeysUnavailable => "keys_unavailable",
            DeadlineExceeded => "deadline_exceeded",
            Overloaded => "overloaded",
            InternalError => "internal_error",
        }
    }

    /// The kind this reason is presented as.
    pub fn kind(self) -> DenyKind {
        use DenyReason::*;
        match self {
            MissingToken => DenyKind::Unauthenticated,
            EmptyToken
            | MultipleTokens
            | MalformedAuthorization
            | MalformedCheck
            | AmbiguousPath => DenyKind::InvalidRequest,
            TokenTooLarge | MalformedToken | AlgorithmNotAllowed | UnsupportedCritical
            | MalformedClaims | UnknownIssuer | IssuerNotAllowed | WrongTokenType
            | MissingExpiry | Expired | NotYetValid | IssuedInFuture | WrongAudience
            | UnknownKey | AmbiguousKey | KeyAlgorithmMismatch | BadSignature => {
                DenyKind::InvalidToken
            }
            InsufficientScope | ClaimMismatch => DenyKind::InsufficientScope,
            RouteDenied => DenyKind::Forbidden,
            KeysUnavailable | DeadlineExceeded | Overloaded | InternalError => {
                DenyKind::Unavailable
            }
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    /// Why.
    pub reason: DenyReason,
    /// The scopes the route needs, for `insufficient_scope` challenges.
    pub scope: Option<String>,
    /// Seconds after which a retry may succeed (unavailable kinds only).
    pub retry_after: Option<u64>,
}

impl Deny {
    fn new(reason: DenyReason) -> Self {
        let retry_after = match reason {
            DenyReason::Overloaded | DenyReason::InternalError => Some(1),
            DenyReason::KeysUnavailable | DenyReason::DeadlineExceeded => Some(5),
            _ => None,
        };
        Self {
            reason,
            scope: None,
            retry_after,
        }
    }

    /// How this denial is presented.
    pub fn kind(&self) -> DenyKind {
        self.reason.kind()
    }
}

/// Who the verified token speaks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// `sub`, if present and a string.
    pub subject: Option<String>,
    /// `iss`.
    pub issuer: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// `exp` in seconds since the epoch.
    pub expires_at: i64,
    /// All claims.
    pub claims: Map<String, Value>,
}

/// An allow.
#[derive(Debug, Clone, PartialEq)]
pub struct Allow {
    /// Claim headers for the upstream.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Every header authgate owns (configured claim headers), so adapters can remove those
    /// without a value here; a client-sent one must never reach the upstream.
    pub owned_headers: Arc<[HeaderName]>,
    /// The verified identity (`None` on an anonymous route).
    pub identity: Option<Identity>,
    /// Where the token was found (`None` on an anonymous route).
    pub token_source: Option<TokenSource>,
}

impl Allow {
    /// Request headers that must not reach the upstream with this allow: every owned header
    /// without a value for this token (a client-sent one would pose as identity), the
    /// underscore spelling of every owned header (`x_auth_subject`, which CGI-style upstreams
    /// read as `x-auth-subject`), and with `strip_upstream` the `authorization` header that
    /// carried the token.
    pub fn headers_to_remove(&self, token: &TokenConfig) -> Vec<String> {
        let mut remove = Vec::new();
        for owned in self.owned_headers.iter() {
            if !self.headers.iter().any(|(name, _)| name == owned) {
                remove.push(owned.as_str().to_owned());
            }
            let underscored = owned.as_str().replace('-', "_");
            if underscored != owned.as_str() {
                remove.push(underscored);
            }
        }
        if token.strip_upstream && self.token_source == Some(TokenSource::Header) {
            remove.push("authorization".to_owned());
        }
        remove
    }

    /// Query parameters that must not reach the upstream: the one that carried the token,
    /// with `strip_upstream`.
    pub fn query_parameters_to_remove(&self, token: &TokenConfig) -> Vec<String> {
        match (&token.query, self.token_source) {
            (Some(name), Some(TokenSource::Query)) if token.strip_upstream => vec![name.clone()],
            _ => Vec::new(),
        }
    }
}

/// The answer to a check.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Let the request through, with these headers.
    Allow(Allow),
    /// Refuse it.
    Deny(Deny),
}

/// Wall-clock seconds, injectable for tests.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Seconds since the Unix epoch.
    fn now_unix(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

/// A clock that stays where a test puts it.
#[derive(Debug, Default)]
pub struct FixedClock(AtomicI64);

impl FixedClock {
    /// A clock at `now`.
    pub fn at(now: i64) -> Self {
        Self(AtomicI64::new(now))
    }

    /// Moves the clock.
    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now_unix(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A trusted issuer and its keys.
#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    /// Its configuration.
    pub config: IssuerConfig,
    /// Where its keys come from.
    pub keys: Arc<dyn KeySource>,
}

/// Remembers which key verified a token (by the token's SHA-256), so a repeated token skips
/// the signature check while that same key object is still in the issuer's current set. A
/// refresh builds new key objects, so any key set change forgets every entry of that issuer.
type VerifiedCache = moka::sync::Cache<[u8; 32], Arc<VerifyingKey>>;

/// Makes decisions. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Decider {
    config: Arc<Config>,
    issuers: Vec<TrustedIssuer>,
    limiter: Semaphore,
    clock: Arc<dyn Clock>,
    owned_headers: Arc<[HeaderName]>,
    verified: Option<VerifiedCache>,
    /// Whether any route rule looks at the path.
    has_path_rules: bool,
    /// Whether any route rule looks at the host.
    has_host_rules: bool,
    /// Whether any route rule looks at the method.
    has_method_rules: bool,
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Glob over a path: `*` matches within one segment, `**` across segments.
fn glob_match(pattern: &[u8], path: &[u8]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((b'*', rest)) if rest.first() == Some(&b'*') => {
            let rest = &rest[1..];
            (0..=path.len()).any(|i| glob_match(rest, &path[i..]))
        }
        Some((b'*', rest)) => {
            let segment_end = path.iter().position(|&b| b == b'/').unwrap_or(path.len());
            (0..=segment_end).any(|i| glob_match(rest, &path[i..]))
        }
        Some((c, rest)) => path.first() == Some(c) && glob_match(rest, &path[1..]),
    }
}

/// The path as route rules see it: percent-decoded, `.` and `..` segments resolved, repeated
/// slashes merged, query and fragment dropped. `None` when a proxy and an upstream could read it
/// differently: an encoded `/`, `\` or `%`, a backslash, a `;` (`..;/` path parameters), a control
/// byte, a raw (unencoded) non-ASCII byte, invalid UTF-8 once decoded, `..` above the root, or no
/// leading `/`.
pub(crate) fn canonical_path(raw: &str) -> Option<String> {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return None;
    }
    let ambiguous = |b: u8| b == b'\\' || b == b';' || b < 0x20 || b == 0x7f;
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            let value = u8::from_str_radix(hex, 16).ok()?;
            if value == b'/' || value == b'%' || ambiguous(value) {
                return None;
            }
            decoded.push(value);
            i += 3;
        } else {
            // A raw non-ASCII byte is not valid in a URI; upstreams repair it differently
            // (re-encode, Unicode-normalise: a fullwidth `／` may become `/`).
            if ambiguous(b) || !b.is_ascii() {
                return None;
            }
            decoded.push(b);
            i += 1;
        }
    }
    let text = String::from_utf8(decoded).ok()?;
    let mut segments: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop()?;
            }
            s => segments.push(s),
        }
    }
    let mut canonical = format!("/{}", segments.join("/"));
    if text.ends_with('/') && !segments.is_empty() {
        canonical.push('/');
    }
    Some(canonical)
}

impl Route {
    /// Whether this rule matches; `path` is the canonical path (`None`: the proxy did not say).
    fn matches(&self, req: &CheckRequest, path: Option<&str>) -> bool {
        if let Some(host) = &self.host {
            let Some(req_host) = req.host.as_deref() else {
                return false;
            };
            if !host_without_port(req_host).eq_ignore_ascii_case(host) {
                return false;
            }
        }
        if let Some(methods) = &self.methods {
            let Some(method) = req.method.as_deref() else {
                return false;
            };
            if !methods.iter().any(|m| m == method) {
                return false;
            }
        }
        match (&self.path, path) {
            (PathMatch::Any, _) => true,
            // No original path known: only path-agnostic rules match, so a missing header can
            // never select an anonymous rule.
            (_, None) => false,
            (PathMatch::Prefix(prefix), Some(path)) => {
                prefix.is_empty()
                    || path == prefix
                    || path
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
            (PathMatch::Glob(glob), Some(path)) => glob_match(glob.as_bytes(), path.as_bytes()),
        }
    }
}

/// Whether `typ` is one of the accepted values (case-insensitive, `application/` optional as
/// RFC 7515 §4.1.9 allows).
fn typ_accepted(typ: Option<&str>, accepted: &[String]) -> bool {
    let Some(typ) = typ else { return false };
    let norm = |t: &str| {
        let lower = t.to_ascii_lowercase();
        lower
            .strip_prefix("application/")
            .map(str::to_owned)
            .unwrap_or(lower)
    };
    let typ = norm(typ);
    accepted.iter().any(|a| norm(a) == typ)
}

impl Decider {
    /// A decider over these issuers, in config order.
    pub fn new(config: Arc<Config>, issuers: Vec<TrustedIssuer>, clock: Arc<dyn Clock>) -> Self {
        let owned_headers: Arc<[HeaderName]> = config
            .claim_headers
            .headers
            .iter()
            .map(|(_, name)| name.clone())
            .collect();
        let cache = config.verified_cache;
        let verified = (cache.capacity > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(cache.capacity)
                .time_to_live(cache.ttl)
                .build()
        });
        let has_path_rules = config
            .routes
            .iter()
            .any(|r| !matches!(r.path, PathMatch::Any));
        Self {
            has_path_rules,
            has_host_rules: config.routes.iter().any(|r| r.host.is_some()),
            has_method_rules: config.routes.iter().any(|r| r.methods.is_some()),
            verified,
            limiter: Semaphore::new(config.limits.max_concurrent_checks),
            config,
            issuers,
            clock,
            owned_headers,
        }
    }

    /// The configuration this decider runs on.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every header authgate owns.
    pub fn owned_headers(&self) -> &Arc<[HeaderName]> {
        &self.owned_headers
    }

    /// Key health per issuer.
    pub fn key_health(&self) -> Vec<(&str, KeyHealth)> {
        self.issuers
            .iter()
            .map(|i| (i.config.issuer.as_str(), i.keys.health()))
            .collect()
    }

    /// Decides one check: bounded by the concurrency limit (shed, not queued) and by the
    /// per-check deadline while waiting for keys.
    pub async fn decide(&self, req: &CheckRequest) -> Decision {
        self.decide_with(req, None).await
    }

    async fn decide_with(&self, req: &CheckRequest, explicit: Option<&Requirement>) -> Decision {
        let started = Instant::now();
        let frontend = req.frontend.as_str();
        let decision = match self.limiter.try_acquire() {
            // A panic in the decision path is a bug; it must still end as a counted deny, never
            // as a dropped connection (which Envoy's failure_mode_allow would turn into an allow).
            Ok(_permit) => AssertUnwindSafe(self.decide_within_limits(req, explicit, started))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!(frontend, "the decision panicked; denied as internal_error");
                    Decision::Deny(Deny::new(DenyReason::InternalError))
                }),
            Err(_) => {
                metrics::counter!(telemetry::SHED, "frontend" => frontend).increment(1);
                Decision::Deny(Deny::new(DenyReason::Overloaded))
            }
        };
        let (result, reason) = match &decision {
            Decision::Allow(a) if a.identity.is_none() => ("allow", "anonymous"),
            Decision::Allow(_) => ("allow", "valid_token"),
            Decision::Deny(d) => ("deny", d.reason.as_str()),
        };
        metrics::counter!(telemetry::DECISIONS, "frontend" => frontend, "result" => result, "reason" => reason)
            .increment(1);
        metrics::histogram!(telemetry::DECISION_DURATION, "frontend" => frontend)
            .record(started.elapsed().as_secs_f64());
        if let Decision::Deny(d) = &decision {
            tracing::debug!(
                frontend,
                reason = d.reason.as_str(),
                method = req.method.as_deref().unwrap_or("-"),
                host = req.host.as_deref().unwrap_or("-"),
                path = req.path.as_deref().map(|p| p.split('?').next().unwrap_or("")).unwrap_or("-"),
                peer = ?req.peer,
                "check denied"
            );
        }
        decision
    }

    /// Decides on a bare token for a caller that is not a proxy (`TokenService/Verify`): no
    /// route rules apply (a token is always verified); `requirement` takes a route's place.
    pub async fn decide_token(&self, token: &str, requirement: &Requirement) -> Decision {
        let mut authorization = b"Bearer ".to_vec();
        authorization.extend_from_slice(token.as_bytes());
        let req = CheckRequest {
            frontend: Frontend::TokenService,
            method: None,
            host: None,
            path: None,
            authorization: vec![authorization],
            peer: None,
            malformed: false,
        };
        self.decide_with(&req, Some(requirement)).await
    }

    async fn decide_within_limits(
        &self,
        req: &CheckRequest,
        explicit: Option<&Requirement>,
        started: Instant,
    ) -> Decision {
        if req.malformed {
            return Decision::Deny(Deny::new(DenyReason::MalformedCheck));
        }
        if let Some(requirement) = explicit {
            return match self.verify(req, Some(requirement), started).await {
                Ok(allow) => Decision::Allow(allow),
                Err(deny) => Decision::Deny(deny),
            };
        }
        // A rule cannot be skipped because the proxy left out what it looks at: a skipped deny
        // rule would let the request through on the default requirement.
        if (self.has_path_rules && req.path.is_none())
            || (self.has_host_rules && req.host.is_none())
            || (self.has_method_rules && req.method.is_none())
        {
            return Decision::Deny(Deny::new(DenyReason::MalformedCheck));
        }
        let path = match req.path.as_deref().map(canonical_path) {
            None => None,
            Some(Some(path)) => Some(path),
            // A path the upstream may read differently cannot be matched against path rules
            // safely either way (an anonymous rule opened, a deny rule skipped).
            Some(None) if self.has_path_rules => {
                return Decision::Deny(Deny::new(DenyReason::AmbiguousPath));
            }
            Some(None) => None,
        };
        let route = self
            .config
            .routes
            .iter()
            .find(|r| r.matches(req, path.as_deref()));
        let route_req = match route {
            Some(route) => match &route.action {
                RouteAction::Anonymous => {
                    return Decision::Allow(Allow {
                        headers: Vec::new(),
                        owned_headers: Arc::clone(&self.owned_headers),
                        identity: None,
                        token_source: None,
                    });
                }
                RouteAction::Deny => return Decision::Deny(Deny::new(DenyReason::RouteDenied)),
                RouteAction::Require(r) => Some(r),
            },
            None => None,
        };
        match self.verify(req, route_req, started).await {
            Ok(allow) => Decision::Allow(allow),
            Err(deny) => Decision::Deny(deny),
        }
    }

    async fn verify(
        &self,
        req: &CheckRequest,
        route_req: Option<&Requirement>,
        started: Instant,
    ) -> Result<Allow, Deny> {
        let deny = |r| Deny::new(r);
        let cfg = &self.config;
        let found = find_token(req, &cfg.token)
            .map_err(deny)?
            .ok_or_else(|| deny(DenyReason::MissingToken))?;
        if found.token.len() > cfg.token.max_bytes {
            return Err(deny(DenyReason::TokenTooLarge));
        }
        let jws = parse_compact(&found.token).map_err(|e| {
            deny(match e {
                FormatError::Alg => DenyReason::AlgorithmNotAllowed,
                FormatError::Crit => DenyReason::UnsupportedCritical,
                _ => DenyReason::MalformedToken,
            })
        })?;
        let claims = &jws.claims;

        // Cheap rejections first: issuer, algorithm, type, times, audience. No key is touched.
        let iss = match claims.get("iss") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(deny(DenyReason::MalformedClaims)),
            None => return Err(deny(DenyReason::UnknownIssuer)),
        };
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or_else(|| deny(DenyReason::UnknownIssuer))?;
        let requirements = [Some(&cfg.require), route_req];
        for r in requirements.iter().flatten() {
            if let Some(allowed) = &r.issuers
                && !allowed.iter().any(|a| a == iss)
            {
                return Err(deny(DenyReason::IssuerNotAllowed));
            }
        }
        if !issuer.config.algorithms.contains(&jws.header.alg) {
            return Err(deny(DenyReason::AlgorithmNotAllowed));
        }
        if let Some(accepted) = &cfg.verify.required_typ
            && !typ_accepted(jws.header.typ.as_deref(), accepted)
        {
            return Err(deny(DenyReason::WrongTokenType));
        }
        let expires_at = self.check_times(claims)?;
        let audiences = route_req
            .and_then(|r| r.audiences.as_ref())
            .or(cfg.require.audiences.as_ref())
            .unwrap_or(&issuer.config.audiences);
        check_audience(claims, audiences, cfg.verify.audience_match)?;

        // Keys, bounded by what is left of the deadline.
        let remaining = cfg.limits.check_deadline.saturating_sub(started.elapsed());
        let lookup = issuer
            .keys
            .lookup(jws.header.kid.as_deref(), jws.header.alg);
        let keys = match tokio::time::timeout(remaining, lookup).await {
            Err(_) => return Err(deny(DenyReason::DeadlineExceeded)),
            Ok(KeyLookup::Found(keys)) => keys,
            Ok(KeyLookup::UnknownKid) => return Err(deny(DenyReason::UnknownKey)),
            Ok(KeyLookup::AmbiguousKid) => return Err(deny(DenyReason::AmbiguousKey)),
            Ok(KeyLookup::AlgorithmMismatch) => {
                return Err(deny(DenyReason::KeyAlgorithmMismatch));
            }
            Ok(KeyLookup::Unavailable) => return Err(deny(DenyReason::KeysUnavailable)),
        };
        self.check_signature(&found.token, &jws, &keys)?;

        // Authorization on a verified token.
        let granted = granted_scopes(claims);
        for r in requirements.iter().flatten() {
            if r.scopes.iter().any(|s| !granted.contains(&s.as_str())) {
                return Err(Deny {
                    scope: Some(r.scopes.join(" ")),
                    ..deny(DenyReason::InsufficientScope)
                });
            }
            if !r.claims.iter().all(|c| c.satisfied_by(claims)) {
                return Err(deny(DenyReason::ClaimMismatch));
            }
        }

        let (headers, rejected) = claim_headers(claims, &cfg.claim_headers);
        if rejected > 0 {
            metrics::counter!(telemetry::CLAIM_HEADERS_REJECTED).increment(rejected as u64);
        }
        let identity = Identity {
            subject: claims.get("sub").and_then(Value::as_str).map(str::to_owned),
            issuer: iss.to_owned(),
            scopes: granted.iter().map(|s| (*s).to_owned()).collect(),
            expires_at,
            claims: Map::new(),
        };
        Ok(Allow {
            headers,
            owned_headers: Arc::clone(&self.owned_headers),
            identity: Some(Identity {
                claims: jws.claims,
                ..identity
            }),
            token_source: Some(found.source),
        })
    }

    /// Verifies the signature with one of `keys`, or finds that the same token was verified
    /// before by one of these very key objects.
    fn check_signature(
        &self,
        token: &str,
        jws: &crate::verify::Jws<'_>,
        keys: &[Arc<VerifyingKey>],
    ) -> Result<(), Deny> {
        let Some(cache) = &self.verified else {
            return match keys.iter().any(|k| signature_valid(jws, k)) {
                true => Ok(()),
                false => Err(Deny::new(DenyReason::BadSignature)),
            };
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if cache
            .get(&digest)
            .is_some_and(|known| keys.iter().any(|k| Arc::ptr_eq(k, &known)))
        {
            metrics::counter!(telemetry::VERIFIED_CACHE, "result" => "hit").increment(1);
            return Ok(());
        }
        metrics::counter!(telemetry::VERIFIED_CACHE, "result" => "miss").increment(1);
        let key = keys
            .iter()
            .find(|k| signature_valid(jws, k))
            .ok_or_else(|| Deny::new(DenyReason::BadSignature))?;
        cache.insert(digest, Arc::clone(key));
        Ok(())
    }

    /// Checks `exp` (required), `nbf` and `iat` with the leeway; returns `exp`.
    fn check_times(&self, claims: &Map<String, Value>) -> Result<i64, Deny> {
        let now = self.clock.now_unix();
        let leeway = i64::try_from(self.config.verify.leeway.as_secs()).unwrap_or(i64::MAX);
        let date = |name: &str| -> Result<Option<i64>, Deny> {
            claims
                .get(name)
                .map(|v| numeric_date(v).map_err(|_| Deny::new(DenyReason::MalformedClaims)))
                .transpose()
        };
        let exp = date("exp")?.ok_or_else(|| Deny::new(DenyReason::MissingExpiry))?;
        if now >= exp.saturating_add(leeway) {
            return Err(Deny::new(DenyReason::Expired));
        }
        if let Some(nbf) = date("nbf")?
            && now.saturating_add(leeway) < nbf
        {
            return Err(Deny::new(DenyReason::NotYetValid));
        }
        if let Some(iat) = date("iat")?
            && iat > now.saturating_add(leeway)
        {
            return Err(Deny::new(DenyReason::IssuedInFuture));
        }
        Ok(exp)
    }
}

/// Checks `aud` (string or array of strings) against the audiences.
fn check_audience(
    claims: &Map<String, Value>,
    audiences: &[String],
    mode: AudienceMatch,
) -> Result<(), Deny> {
    let token_auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => {
            let mut auds = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str() {
                    Some(s) => auds.push(s),
                    None => return Err(Deny::new(DenyReason::MalformedClaims)),
                }
            }
            auds
        }
        Some(_) => return Err(Deny::new(DenyReason::MalformedClaims)),
        None => return Err(Deny::new(DenyReason::WrongAudience)),
    };
    let has = |a: &String| token_auds.contains(&a.as_str());
    let ok = match mode {
        AudienceMatch::Any => audiences.iter().any(has),
        AudienceMatch::All => !audiences.is_empty() && audiences.iter().all(has),
    };
    if ok {
        Ok(())
    } else {
        Err(Deny::new(DenyReason::WrongAudience))
    }
}

#[cfg(test)]
mod tests;
