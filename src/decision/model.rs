//! The decision model: what a mouth asks ([`CheckRequest`]) and what the core answers
//! ([`Decision`]: an [`Allow`] or a [`Deny`] with its [`DenyReason`]). Plain data, no I/O.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use super::cache::VerifiedToken;
use crate::cert::ClientCert;
use crate::token::TokenSource;

/// Which mouth a check came through (a metric label, and the profile of its deny answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// Every frontend, for metrics registered up front and exhaustive tests.
    pub const ALL: [Frontend; 5] = [
        Frontend::ForwardAuth,
        Frontend::Nginx,
        Frontend::EnvoyHttp,
        Frontend::Grpc,
        Frontend::TokenService,
    ];

    /// Whether the proxy behind this mouth can be told to remove request headers (Envoy, in
    /// both modes): only then does an allow carry `headers_to_remove`.
    pub fn removes_headers(self) -> bool {
        matches!(self, Frontend::EnvoyHttp | Frontend::Grpc)
    }

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

/// Whether a client-sent header name could be another spelling of a header authgate owns (an
/// upstream that folds `_` or `.` into `-` would read it as one): the names a mouth must hand
/// the core in `CheckRequest::header_names`; any other name is never removed for spelling.
pub fn could_pose_as_owned(name: &str) -> bool {
    name.contains(['_', '.'])
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
    /// `http` or `https`: the original request's scheme, if the proxy told (for DPoP `htu`).
    pub scheme: Option<String>,
    /// Path and query of the original request, if the proxy told.
    pub path: Option<String>,
    /// Every `Authorization` header value, in order.
    pub authorization: Vec<Vec<u8>>,
    /// Names of the original request's headers as the proxy passed them on (lower-case on
    /// Envoy), where the mouth can see them, or at least those that [`could_pose_as_owned`]:
    /// the core finds client-sent spellings of owned headers here, so that the proxy can be
    /// told to remove each one.
    pub header_names: Vec<String>,
    /// The address of the peer that asked: the proxy (the TCP peer of the check connection).
    /// `trusted_proxies` is matched against it.
    pub proxy: Option<IpAddr>,
    /// The end client's address as the proxy describes it (Envoy's `source.address`,
    /// `X-Forwarded-For`); believed, like method, host and path, only from a trusted proxy.
    pub client: Option<IpAddr>,
    /// The adapter could not translate the proxy's request in full (no HTTP attributes, an
    /// oversized header map, an original URI that is not ASCII): it is denied as a malformed
    /// request, never guessed at.
    pub malformed: bool,
    /// The client's TLS certificate as the proxy passed it (for certificate-bound tokens);
    /// believed, like the other forwarded attributes, only from a trusted proxy.
    pub client_cert: Option<ClientCert>,
    /// The values of the headers that token sources read besides `Authorization` (`Cookie`,
    /// the custom token header: `Config::token_source_headers`), in request order; empty when
    /// no such source is on.
    pub token_headers: Vec<(http::HeaderName, Vec<u8>)>,
}

impl CheckRequest {
    /// An empty request through `frontend`, for adapters to fill in.
    pub fn new(frontend: Frontend) -> Self {
        Self {
            frontend,
            method: None,
            host: None,
            scheme: None,
            path: None,
            authorization: Vec::new(),
            header_names: Vec::new(),
            proxy: None,
            client: None,
            malformed: false,
            client_cert: None,
            token_headers: Vec::new(),
        }
    }

    /// This request with what a peer outside `trusted_proxies` said about the original request
    /// (method, host, path, client address) forgotten: route rules that need them deny it as
    /// malformed.
    pub fn without_forwarded_attributes(&self) -> Self {
        Self {
            method: None,
            host: None,
            scheme: None,
            path: None,
            client: None,
            client_cert: None,
            ..self.clone()
        }
    }

    /// An empty GET / request for tests.
    pub fn for_test() -> Self {
        Self {
            method: Some("GET".to_owned()),
            host: Some("api.example.com".to_owned()),
            scheme: Some("https".to_owned()),
            path: Some("/".to_owned()),
            ..Self::new(Frontend::ForwardAuth)
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
    /// The `Authorization` credential is not `Bearer 1*SP b64token` (RFC 6750 §2.1): control
    /// or non-ASCII bytes, words after the token, bytes outside the b64token alphabet.
    MalformedAuthorization,
    /// The proxy's check request itself is incomplete or over its limits.
    MalformedCheck,
    /// The original path could be read differently by the upstream (encoded `/`, `..` above
    /// the root, `;`, backslashes, bytes outside visible ASCII) while route rules depend on it.
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
    /// The issuer's token endpoint refused the request's Basic credentials (password grant).
    InvalidCredentials,
    /// The token endpoint is unreachable, slow, failing, or refused authgate's own client.
    TokenEndpointUnavailable,
    /// The user name has used its password-grant exchanges for this minute.
    PasswordRateLimited,
    /// The token is bound to a client certificate (`cnf.x5t#S256`) and the request came with
    /// another certificate or none (RFC 8705 §3).
    CertificateMismatch,
    /// `proof_of_possession_mtls: strict` and the token is not bound to a certificate.
    UnboundToken,
    /// A claim of `required_claims` is missing (or `iat`, where `max_token_lifetime` is set).
    MissingClaim,
    /// `exp - iat` is longer than `max_token_lifetime`.
    LifetimeTooLong,
    /// The DPoP proof is missing, malformed, or does not fit the request or the token (RFC 9449
    /// §4.3).
    InvalidDpopProof,
    /// The DPoP proof's `jti` was used before, inside the proof window.
    DpopProofReplayed,
    /// The DPoP proof's key is not the one the token is bound to (`cnf.jkt`).
    DpopKeyMismatch,
    /// A bearer token where DPoP is required, or a DPoP-bound token (`cnf.jkt`) presented as a
    /// bearer token.
    DpopRequired,
    /// `Authorization: DPoP` with a token that is not DPoP-bound, or of an issuer without DPoP.
    DpopUnboundToken,
    /// The introspection endpoint says the token is not active (RFC 7662 §2.2).
    InactiveToken,
    /// The introspection endpoint is unreachable, slow, failing, refused authgate's client, or
    /// its call budget is spent.
    IntrospectionUnavailable,
}

/// How a denial is presented; `deny.rs` maps each kind once to every protocol's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyKind {
    /// No token: 401 with a bare challenge.
    Unauthenticated,
    /// Bad token: 401 `invalid_token`.
    InvalidToken,
    /// Malformed request: 400 `invalid_request`.
    InvalidRequest,
    /// A bad DPoP proof: 401 `invalid_dpop_proof` (RFC 9449 §7.1).
    InvalidDpopProof,
    /// Token lacks scope or claims: 403 `insufficient_scope`.
    InsufficientScope,
    /// Policy says no: 403 without an error code.
    Forbidden,
    /// Keys unavailable or overloaded: fail closed, with `Retry-After`.
    Unavailable,
}

impl DenyKind {
    /// Every kind, for exhaustive tests.
    pub const ALL: [DenyKind; 7] = [
        DenyKind::Unauthenticated,
        DenyKind::InvalidToken,
        DenyKind::InvalidRequest,
        DenyKind::InvalidDpopProof,
        DenyKind::InsufficientScope,
        DenyKind::Forbidden,
        DenyKind::Unavailable,
    ];
}

impl DenyReason {
    /// Every reason, for exhaustive tests and documentation.
    pub const ALL: [DenyReason; 44] = [
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
        DenyReason::InvalidCredentials,
        DenyReason::TokenEndpointUnavailable,
        DenyReason::PasswordRateLimited,
        DenyReason::CertificateMismatch,
        DenyReason::UnboundToken,
        DenyReason::MissingClaim,
        DenyReason::LifetimeTooLong,
        DenyReason::InvalidDpopProof,
        DenyReason::DpopProofReplayed,
        DenyReason::DpopKeyMismatch,
        DenyReason::DpopRequired,
        DenyReason::DpopUnboundToken,
        DenyReason::InactiveToken,
        DenyReason::IntrospectionUnavailable,
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
            InvalidCredentials => "invalid_credentials",
            TokenEndpointUnavailable => "token_endpoint_unavailable",
            PasswordRateLimited => "password_rate_limited",
            CertificateMismatch => "certificate_mismatch",
            UnboundToken => "unbound_token",
            MissingClaim => "missing_claim",
            LifetimeTooLong => "token_lifetime_too_long",
            InvalidDpopProof => "invalid_dpop_proof",
            DpopProofReplayed => "dpop_proof_replayed",
            DpopKeyMismatch => "dpop_key_mismatch",
            DpopRequired => "dpop_required",
            DpopUnboundToken => "dpop_unbound_token",
            InactiveToken => "inactive_token",
            IntrospectionUnavailable => "introspection_unavailable",
        }
    }

    /// The kind this reason is presented as.
    pub fn kind(self) -> DenyKind {
        use DenyReason::*;
        match self {
            MissingToken | InvalidCredentials => DenyKind::Unauthenticated,
            EmptyToken
            | MultipleTokens
            | MalformedAuthorization
            | MalformedCheck
            | AmbiguousPath => DenyKind::InvalidRequest,
            TokenTooLarge | MalformedToken | AlgorithmNotAllowed | UnsupportedCritical
            | MalformedClaims | UnknownIssuer | IssuerNotAllowed | WrongTokenType
            | MissingExpiry | Expired | NotYetValid | IssuedInFuture | WrongAudience
            | UnknownKey | AmbiguousKey | KeyAlgorithmMismatch | BadSignature
            | CertificateMismatch | UnboundToken | MissingClaim | LifetimeTooLong
            | DpopRequired | DpopUnboundToken | InactiveToken => DenyKind::InvalidToken,
            InvalidDpopProof | DpopProofReplayed | DpopKeyMismatch => DenyKind::InvalidDpopProof,
            InsufficientScope | ClaimMismatch => DenyKind::InsufficientScope,
            RouteDenied => DenyKind::Forbidden,
            KeysUnavailable
            | DeadlineExceeded
            | Overloaded
            | InternalError
            | TokenEndpointUnavailable
            | PasswordRateLimited
            | IntrospectionUnavailable => DenyKind::Unavailable,
        }
    }

    /// Seconds after which a retry may succeed, for the reasons that are worth a retry.
    fn retry_after(self) -> Option<u64> {
        match self {
            DenyReason::Overloaded | DenyReason::InternalError => Some(1),
            DenyReason::KeysUnavailable
            | DenyReason::DeadlineExceeded
            | DenyReason::TokenEndpointUnavailable
            | DenyReason::IntrospectionUnavailable => Some(5),
            DenyReason::PasswordRateLimited => Some(60),
            _ => None,
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
    /// A 401 also offers HTTP Basic (an issuer accepts the password method).
    pub basic_challenge: bool,
    /// The request presented its token with the `DPoP` scheme: the error goes on the `DPoP`
    /// challenge.
    pub dpop_scheme: bool,
}

impl Deny {
    /// A denial for `reason`, with the `Retry-After` that reason calls for.
    pub fn new(reason: DenyReason) -> Self {
        Self {
            reason,
            scope: None,
            retry_after: reason.retry_after(),
            basic_challenge: false,
            dpop_scheme: false,
        }
    }

    /// How this denial is presented.
    pub fn kind(&self) -> DenyKind {
        self.reason.kind()
    }
}

impl From<DenyReason> for Deny {
    fn from(reason: DenyReason) -> Self {
        Deny::new(reason)
    }
}

/// Who the verified token speaks for: a shared view of what its verification found, cheap to
/// hand out with every allow.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    token: Arc<VerifiedToken>,
    issuer: Arc<str>,
}

impl Identity {
    pub(crate) fn new(token: Arc<VerifiedToken>, issuer: Arc<str>) -> Self {
        Self { token, issuer }
    }

    /// `sub`, if present and a string.
    pub fn subject(&self) -> Option<&str> {
        self.token.subject()
    }

    /// `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Granted scopes (`scope` and `scp`).
    pub fn scopes(&self) -> impl Iterator<Item = &str> + '_ {
        self.token.scopes()
    }

    /// `exp` in seconds since the epoch.
    pub fn expires_at(&self) -> i64 {
        self.token.times.exp
    }
}

/// Request headers an allow has the proxy remove (see [`Allow::headers_to_remove`]): the part
/// every allow shares was worked out when the config was loaded and is shared, not copied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Removals {
    /// Owned headers without a value in this allow.
    pub(crate) missing: Vec<String>,
    /// The all-underscore and all-dot spellings of every owned header.
    pub(crate) spellings: Arc<[String]>,
    /// Other spellings of owned headers that the request carried, and `authorization` with
    /// `strip_upstream`.
    pub(crate) others: Vec<String>,
}

impl Removals {
    /// Every header name to remove, each once.
    pub fn iter(&self) -> impl Iterator<Item = &str> + Clone + '_ {
        self.missing
            .iter()
            .chain(self.spellings.iter())
            .chain(&self.others)
            .map(String::as_str)
    }

    /// Whether there is nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.spellings.is_empty() && self.others.is_empty()
    }

    /// Whether `name` is among them.
    pub fn contains(&self, name: &str) -> bool {
        self.iter().any(|n| n == name)
    }
}

/// An allow.
#[derive(Debug, Clone, PartialEq)]
pub struct Allow {
    /// Claim headers for the upstream.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Every header authgate owns (the configured claim headers).
    pub owned_headers: Arc<[HeaderName]>,
    /// Request headers the proxy must remove before the request goes upstream, for the mouths
    /// that can (Envoy: gRPC `headers_to_remove`, HTTP mode `x-envoy-auth-headers-to-remove`;
    /// empty for the others): every owned header
    /// without a value here, every client-sent spelling that folds to an owned header
    /// (`x_auth_subject`, `x.auth.subject`), and with `strip_upstream` the `authorization` header
    /// that carried the token.
    pub headers_to_remove: Removals,
    /// Query parameters the proxy must remove: the one that carried the token, with
    /// `strip_upstream`.
    pub query_parameters_to_remove: Vec<String>,
    /// The verified identity (`None` on an anonymous route).
    pub identity: Option<Identity>,
    /// Where the token was found (`None` on an anonymous route).
    pub token_source: Option<TokenSource>,
}

/// The answer to a check.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Let the request through, with these headers.
    Allow(Allow),
    /// Refuse it.
    Deny(Deny),
}

impl Decision {
    /// How many distinct label pairs [`Decision::labels`] gives.
    pub const LABELS: usize = 2 + DenyReason::ALL.len();

    /// The `result` and `reason` labels of this decision.
    pub fn labels(&self) -> (&'static str, &'static str) {
        match self {
            Decision::Allow(a) if a.identity.is_none() => ("allow", "anonymous"),
            Decision::Allow(_) => ("allow", "valid_token"),
            Decision::Deny(d) => ("deny", d.reason.as_str()),
        }
    }

    /// A number below [`Decision::LABELS`] per label pair, for metric handles held in an array.
    pub fn label_index(&self) -> usize {
        match self {
            Decision::Allow(a) if a.identity.is_none() => 0,
            Decision::Allow(_) => 1,
            Decision::Deny(d) => 2 + d.reason as usize,
        }
    }
}
