//! Configuration: raw serde structs (YAML file, `deny_unknown_fields`; [`raw`]) are overlaid with
//! environment and CLI values ([`overrides`]), then `validate()`d once ([`validate`], one
//! function per section) into the typed [`Config`] the service runs on. Every problem is
//! reported with the field it belongs to.

mod overrides;
mod raw;
mod validate;

pub use overrides::Overrides;
pub use raw::*;
pub use validate::http_allowed;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::claims::{ClaimPath, ClaimRequirement};
use crate::verify::Alg;

// ---------------------------------------------------------------------------------------------
// Typed config
// ---------------------------------------------------------------------------------------------

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: Listen,
    /// Log output.
    pub log: LogConfig,
    /// Trusted issuers, in config order.
    pub issuers: Vec<IssuerConfig>,
    /// Verification settings shared by all issuers.
    pub verify: VerifyConfig,
    /// Where tokens are read from.
    pub token: TokenConfig,
    /// Claims copied into upstream headers.
    pub claim_headers: ClaimHeaderConfig,
    /// Requirement every token must meet.
    pub require: Requirement,
    /// Peers whose forwarded request attributes are believed; `None`: every peer.
    pub trusted_proxies: Option<Vec<ipnet::IpNet>>,
    /// Per-route rules.
    pub routes: Vec<Route>,
    /// Key cache bounds.
    pub keys: KeyCacheConfig,
    /// Verified-signature cache.
    pub verified_cache: VerifiedCacheConfig,
    /// Request limits.
    pub limits: Limits,
    /// Shutdown timing.
    pub shutdown: ShutdownConfig,
    /// HTTP endpoint settings.
    pub http: HttpConfig,
    /// The header in which a proxy passes the client certificate.
    pub client_cert_header: Option<http::HeaderName>,
    /// Bounds of the password grant.
    pub password_grant: PasswordGrantConfig,
    /// How DPoP proofs are checked.
    pub dpop_proofs: DpopProofConfig,
    /// The RFC 9728 protected-resource metadata, if configured.
    pub resource_metadata: Option<ResourceMetadata>,
}

impl Config {
    /// The issuer whose token endpoint exchanges Basic credentials, if any (at most one).
    pub fn password_issuer(&self) -> Option<usize> {
        self.issuers.iter().position(|i| i.auth_methods.password)
    }

    /// Whether `peer` may describe the original request (see `trusted_proxies`). With no list
    /// every peer may; with one, a peer whose address is unknown may not.
    pub fn trusts_peer(&self, peer: Option<std::net::IpAddr>) -> bool {
        match (&self.trusted_proxies, peer) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(nets), Some(ip)) => {
                let ip = ip.to_canonical();
                nets.iter().any(|net| net.contains(&ip))
            }
        }
    }
}

/// Listen addresses.
#[derive(Debug, Clone, Copy)]
pub struct Listen {
    /// Forward-auth HTTP endpoints.
    pub http: SocketAddr,
    /// gRPC services.
    pub grpc: SocketAddr,
    /// Admin endpoints.
    pub admin: SocketAddr,
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Log settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// Tracing filter directive.
    pub level: String,
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySourceConfig {
    /// `{issuer}/.well-known/openid-configuration` -> `jwks_uri`.
    Discovery,
    /// A configured JWKS URL.
    JwksUri(String),
    /// A local JWKS file.
    JwksFile(PathBuf),
    /// A local PEM public key.
    PemFile {
        /// File path.
        path: PathBuf,
        /// The key's algorithm.
        alg: Alg,
        /// Optional key id.
        kid: Option<String>,
    },
}

/// One trusted issuer.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The exact `iss` value.
    pub issuer: String,
    /// Where keys come from.
    pub source: KeySourceConfig,
    /// Accepted algorithms.
    pub algorithms: Vec<Alg>,
    /// Audiences a token of this issuer must carry.
    pub audiences: Vec<String>,
    /// Whether plain-http fetches are allowed for this issuer.
    pub allow_http: bool,
    /// How requests may authenticate against this issuer.
    pub auth_methods: AuthMethods,
    /// authgate's client at this issuer's token endpoint, when configured.
    pub client: Option<ClientConfig>,
    /// The configured token endpoint (`None`: from discovery).
    pub token_endpoint: Option<String>,
    /// Certificate-bound tokens (RFC 8705).
    pub proof_of_possession_mtls: PopMtls,
    /// Verification settings of this issuer's tokens: its own, else the top-level ones.
    pub verify: VerifyConfig,
    /// This issuer's claim headers (a bit set over `ClaimHeaderConfig::headers`), if its own.
    pub claim_headers: Option<u64>,
    /// DPoP-bound tokens (RFC 9449).
    pub dpop: DpopMode,
    /// Opaque tokens by introspection (RFC 7662), when enabled.
    pub introspection: Option<IntrospectionConfig>,
    /// JWTs are also introspected after local verification (a revocation check).
    pub introspect_jwts: bool,
}

/// An issuer's `dpop` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpopMode {
    /// DPoP is not looked at: `Authorization: DPoP` is not this issuer's scheme.
    Off,
    /// `Authorization: DPoP` with a proof is checked; bearer tokens are accepted unless they
    /// are bound (`cnf.jkt`).
    Optional,
    /// Every token needs a proof: bearer tokens are denied.
    Required,
}

/// An issuer's `introspection` section.
#[derive(Debug, Clone)]
pub struct IntrospectionConfig {
    /// The endpoint (`None`: from discovery).
    pub endpoint: Option<String>,
    /// Longest time an active result is remembered (never past its `exp`).
    pub cache_ttl: Duration,
    /// How long an inactive result is remembered.
    pub negative_ttl: Duration,
    /// Results remembered at most.
    pub cache_capacity: usize,
    /// Calls per second at most.
    pub max_calls_per_second: usize,
}

/// `dpop_proofs`: how DPoP proofs are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopProofConfig {
    /// Accepted proof algorithms.
    pub algorithms: Vec<Alg>,
    /// Oldest accepted `iat`, and how long a `jti` is remembered.
    pub max_age: Duration,
    /// How far in the future `iat` may be.
    pub leeway: Duration,
    /// `jti`s remembered at most.
    pub replay_cache_capacity: usize,
    /// Largest accepted proof.
    pub max_bytes: usize,
}

/// The RFC 9728 protected-resource metadata.
#[derive(Debug, Clone)]
pub struct ResourceMetadata {
    /// The resource identifier.
    pub resource: String,
    /// Authorization servers clients may use.
    pub authorization_servers: Vec<String>,
    /// Scopes clients may request.
    pub scopes_supported: Vec<String>,
    /// Where the document is served, as RFC 9728 §3.1 forms it from `resource`: the absolute
    /// URL named in challenges, and the path authgate answers on.
    pub url: String,
    /// The path part of `url`.
    pub path: String,
}

/// `auth_methods` of an issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthMethods {
    /// Bearer tokens the issuer issued are accepted.
    pub bearer: bool,
    /// HTTP Basic credentials are exchanged at the issuer's token endpoint (password grant).
    pub password: bool,
}

impl Default for AuthMethods {
    fn default() -> Self {
        Self {
            bearer: true,
            password: false,
        }
    }
}

/// How authgate authenticates as a client at a token endpoint.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic with the form-encoded id and secret (RFC 6749 §2.3.1).
    SecretBasic(Secret),
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    SecretPost(Secret),
    /// `private_key_jwt`: a JWT signed with this key in `client_assertion` (RFC 7523).
    PrivateKeyJwt(crate::demo::signing::SigningKey),
}

impl ClientAuth {
    /// The method's name, as the config and discovery documents spell it.
    pub fn method(&self) -> &'static str {
        match self {
            ClientAuth::SecretBasic(_) => "client_secret_basic",
            ClientAuth::SecretPost(_) => "client_secret_post",
            ClientAuth::PrivateKeyJwt(_) => "private_key_jwt",
        }
    }
}

/// authgate's client at an issuer.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `client_id`.
    pub id: String,
    /// How it authenticates.
    pub auth: ClientAuth,
}

/// `proof_of_possession_mtls`: certificate-bound access tokens (RFC 8705 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PopMtls {
    /// Not checked.
    #[default]
    Off,
    /// A token with `cnf.x5t#S256` needs the matching client certificate.
    Optional,
    /// Every token needs `cnf.x5t#S256` and the matching client certificate.
    Strict,
}

/// Bounds of the password grant.
#[derive(Debug, Clone)]
pub struct PasswordGrantConfig {
    /// Remembered exchanges at most.
    pub cache_capacity: usize,
    /// A remembered token is replaced this long before it expires.
    pub refresh_before: Duration,
    /// How long a refused exchange is remembered.
    pub negative_ttl: Duration,
    /// Exchanges per user name per minute at most.
    pub max_exchanges_per_minute: usize,
    /// Extra form parameters of the token request.
    pub params: Vec<(String, String)>,
}

/// How `aud` is matched against the configured audiences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudienceMatch {
    /// At least one configured audience is in the token.
    Any,
    /// Every configured audience is in the token.
    All,
}

/// Verification settings shared by all issuers.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// Clock leeway.
    pub leeway: Duration,
    /// How audiences are matched.
    pub audience_match: AudienceMatch,
    /// Accepted `typ` header values; `None` means not checked.
    pub required_typ: Option<Vec<String>>,
    /// Longest `exp - iat`; `None` means not checked.
    pub max_token_lifetime: Option<Duration>,
    /// Claims a token must carry.
    pub required_claims: Vec<String>,
}

/// Where tokens are read from.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// Cap on a token's length.
    pub max_bytes: usize,
    /// Read `Authorization: Bearer`.
    pub header: bool,
    /// Query parameter name when the query source is enabled.
    pub query: Option<String>,
    /// Cookie name when the cookie source is enabled.
    pub cookie: Option<String>,
    /// The header of its own, when that source is enabled.
    pub custom_header: Option<CustomHeader>,
    /// Remove the token from the upstream request.
    pub strip_upstream: bool,
}

/// A header of its own that carries the token.
#[derive(Debug, Clone)]
pub struct CustomHeader {
    /// The header.
    pub name: http::HeaderName,
    /// Stripped from the value (ASCII case ignored); may be empty.
    pub prefix: String,
}

impl Config {
    /// Whether any issuer accepts DPoP-bound tokens.
    pub fn dpop_accepted(&self) -> bool {
        self.issuers.iter().any(|i| i.dpop != DpopMode::Off)
    }

    /// The request headers token sources read besides `Authorization`: `dpop` where an issuer
    /// accepts DPoP, `cookie` where a cookie source is on (top level or a route), and every
    /// custom header name. Mouths pass their values in `CheckRequest::token_headers`.
    pub fn token_source_headers(&self) -> Vec<http::HeaderName> {
        let mut names: Vec<http::HeaderName> = Vec::new();
        if self.dpop_accepted() {
            names.push(http::HeaderName::from_static("dpop"));
        }
        let sources =
            std::iter::once(&self.token).chain(self.routes.iter().filter_map(|r| r.token.as_ref()));
        for token in sources {
            if token.cookie.is_some() && !names.contains(&http::header::COOKIE) {
                names.push(http::header::COOKIE);
            }
            if let Some(custom) = &token.custom_header
                && !names.contains(&custom.name)
            {
                names.push(custom.name.clone());
            }
        }
        names
    }
}

/// Claim -> header mapping.
#[derive(Debug, Clone)]
pub struct ClaimHeaderConfig {
    /// Every claim header any mapping uses (top level, issuers, routes), once: claim path and
    /// header. A mapping is a bit set over this list (at most 64 entries).
    pub headers: Vec<(ClaimPath, http::HeaderName)>,
    /// The top-level mapping.
    pub default_mapping: u64,
    /// The header that carries the whole verified payload (base64url), when enabled.
    pub payload_header: Option<http::HeaderName>,
    /// Longest value in bytes.
    pub max_value_bytes: usize,
}

/// A token requirement.
#[derive(Debug, Clone, Default)]
pub struct Requirement {
    /// Only these issuers (None: any configured).
    pub issuers: Option<Vec<String>>,
    /// Replaces the issuer's audiences when set.
    pub audiences: Option<Vec<String>>,
    /// Scopes that must all be granted.
    pub scopes: Vec<String>,
    /// Claim conditions that must all hold.
    pub claims: Vec<ClaimRequirement>,
}

/// What a matching route does.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// Allow without a token.
    Anonymous,
    /// Deny every request.
    Deny,
    /// Require a valid token meeting this requirement (plus the top-level one).
    Require(Requirement),
}

/// How a route matches the path.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// Any path.
    Any,
    /// Prefix on a segment boundary.
    Prefix(String),
    /// Glob pattern.
    Glob(String),
}

/// One route rule.
#[derive(Debug, Clone)]
pub struct Route {
    /// Lower-case host without port.
    pub host: Option<String>,
    /// Path condition.
    pub path: PathMatch,
    /// Upper-case methods.
    pub methods: Option<Vec<String>>,
    /// What happens on a match.
    pub action: RouteAction,
    /// Where this route's tokens are read from (`None`: the top-level `token`).
    pub token: Option<TokenConfig>,
    /// This route's claim headers (a bit set over `ClaimHeaderConfig::headers`), if its own.
    pub claim_headers: Option<u64>,
}

/// Key cache and fetch bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCacheConfig {
    /// Lower clamp for max-age.
    pub min_ttl: Duration,
    /// Upper clamp for max-age.
    pub max_ttl: Duration,
    /// Lifetime without max-age.
    pub default_ttl: Duration,
    /// Cooldown after an unknown-kid refetch.
    pub unknown_kid_cooldown: Duration,
    /// How long a key set may serve past failures.
    pub max_stale: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Total fetch timeout.
    pub fetch_timeout: Duration,
    /// Body cap.
    pub max_body_bytes: usize,
    /// Key count cap.
    pub max_keys: usize,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
}

impl Default for KeyCacheConfig {
    fn default() -> Self {
        Self {
            min_ttl: DEFAULT_MIN_TTL,
            max_ttl: DEFAULT_MAX_TTL,
            default_ttl: DEFAULT_TTL,
            unknown_kid_cooldown: DEFAULT_UNKNOWN_KID_COOLDOWN,
            max_stale: DEFAULT_MAX_STALE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_keys: DEFAULT_MAX_KEYS,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
        }
    }
}

/// Verified-signature cache bounds.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedCacheConfig {
    /// Entries at most; 0 disables.
    pub capacity: u64,
    /// Bytes at most; 0 disables.
    pub max_bytes: u64,
    /// Longer tokens are not cached.
    pub max_token_bytes: usize,
    /// Time to live of one entry.
    pub ttl: Duration,
    /// Slots of the recent-tokens index; 0 disables it.
    pub recent_slots: usize,
}

/// Request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Per-check deadline.
    pub check_deadline: Duration,
    /// Concurrency limit.
    pub max_concurrent_checks: usize,
    /// Header bytes cap.
    pub max_header_bytes: usize,
    /// Header read timeout.
    pub header_read_timeout: Duration,
    /// Open connections per listener.
    pub max_connections: usize,
}

/// Shutdown timing.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownConfig {
    /// Not-ready period before the listeners close.
    pub grace: Duration,
    /// Bound on draining.
    pub drain_timeout: Duration,
}

/// HTTP endpoint settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Envoy HTTP-mode prefix, starting with `/`, no trailing slash.
    pub envoy_prefix: String,
    /// Challenge realm.
    pub realm: String,
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// One problem with the configuration, naming its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `issuers[0].issuer`.
    pub field: String,
    /// What is wrong, lower-case, no trailing period.
    pub problem: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML of the expected shape (unknown field, wrong type).
    #[error("config file {path}: {message}")]
    Parse {
        /// The path.
        path: PathBuf,
        /// Parser message, naming the field and location.
        message: String,
    },
    /// Values failed validation; one entry per problem.
    #[error("{}", display_problems(.0))]
    Invalid(Vec<FieldError>),
}

fn display_problems(problems: &[FieldError]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// One line per problem, for printing before exit code 64.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(problems) => problems.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Reads and parses a YAML config file (not yet validated).
pub fn read_file(path: &std::path::Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_yaml(&text).map_err(|message| ConfigError::Parse {
        path: path.to_owned(),
        message,
    })
}

/// Parses YAML text into the raw config.
pub fn parse_yaml(text: &str) -> Result<RawConfig, String> {
    if text.trim().is_empty() {
        return Ok(RawConfig::default());
    }
    serde_saphyr::from_str::<RawConfig>(text).map_err(|e| e.to_string().replace('\n', " "))
}

#[cfg(test)]
mod tests;
