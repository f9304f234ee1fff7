//! The YAML file as written: serde structs with `deny_unknown_fields`, every field optional and
//! documented, and the defaults `validate()` fills in, as named constants.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::verify::Alg;

/// Default listen address of the forward-auth HTTP endpoints.
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:8080";
/// Default listen address of the gRPC services.
pub const DEFAULT_GRPC_LISTEN: &str = "0.0.0.0:9001";
/// Default listen address of the admin endpoints (metrics, health).
pub const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:9090";
/// Default cap on a token's length in bytes, checked before any decoding.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Default clock leeway for `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Default bounds for a key set's lifetime taken from `Cache-Control: max-age`.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(60);
/// Upper bound of a key set's lifetime.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(3600);
/// Lifetime of a key set served without `Cache-Control: max-age`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// Cooldown after an unknown-kid refetch during which unknown kids are denied without fetching.
pub const DEFAULT_UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(30);
/// How long the last good key set keeps serving while the IdP fails.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(24 * 3600);
/// Connect timeout for discovery and JWKS fetches.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Total timeout for one discovery or JWKS fetch.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest discovery or JWKS body accepted.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most keys accepted in one JWKS.
pub const DEFAULT_MAX_KEYS: usize = 100;
/// First retry delay after a failed key fetch (doubles, with jitter).
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Longest retry delay after failed key fetches.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);
/// Per-check deadline, below Envoy's 200 ms default ext_authz timeout.
pub const DEFAULT_CHECK_DEADLINE: Duration = Duration::from_millis(150);
/// Checks served at once before new ones are shed.
pub const DEFAULT_MAX_CONCURRENT_CHECKS: usize = 1024;
/// Cap on all request headers of one HTTP request.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// Time a client gets to send its request headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Open connections per listener; more wait in the kernel's backlog until one closes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Time between SIGTERM and closing the listeners (readiness is false during it).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Bound on draining in-flight requests after the listeners close.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest claim header value; longer values are omitted and counted.
pub const DEFAULT_MAX_CLAIM_HEADER_BYTES: usize = 4096;
/// Verified tokens remembered so a repeated token skips the signature check.
pub const DEFAULT_VERIFIED_CACHE_CAPACITY: u64 = 100_000;
/// Default byte bound of the verified-token cache.
pub const DEFAULT_VERIFIED_CACHE_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default size of the longest token the verified-token cache keeps.
pub const DEFAULT_VERIFIED_CACHE_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest time a verification is remembered.
pub const DEFAULT_VERIFIED_CACHE_TTL: Duration = Duration::from_secs(300);
/// Default `verified_cache.recent_slots`.
pub const DEFAULT_VERIFIED_CACHE_RECENT_SLOTS: usize = 1024;
/// Largest `verified_cache.recent_slots`.
pub const MAX_VERIFIED_CACHE_RECENT_SLOTS: usize = 1 << 20;
/// Path prefix of the Envoy ext_authz HTTP endpoint.
pub const DEFAULT_ENVOY_PREFIX: &str = "/envoy";
/// Realm in `WWW-Authenticate` challenges.
pub const DEFAULT_REALM: &str = "authgate";
/// Default bound on remembered password-grant exchanges.
pub const DEFAULT_PASSWORD_GRANT_CACHE_CAPACITY: usize = 10_000;
/// Default time before expiry at which a remembered exchanged token is replaced.
pub const DEFAULT_PASSWORD_GRANT_REFRESH_BEFORE: Duration = Duration::from_secs(30);
/// Default time a refused exchange is remembered.
pub const DEFAULT_PASSWORD_GRANT_NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// Default bound on exchanges per user name per minute.
pub const DEFAULT_PASSWORD_GRANT_MAX_PER_MINUTE: usize = 10;
/// Default `introspection.cache_ttl`.
pub const DEFAULT_INTROSPECTION_CACHE_TTL: Duration = Duration::from_secs(60);
/// Default `introspection.negative_ttl`.
pub const DEFAULT_INTROSPECTION_NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// Default `introspection.cache_capacity`.
pub const DEFAULT_INTROSPECTION_CACHE_CAPACITY: usize = 100_000;
/// Default `introspection.max_calls_per_second`.
pub const DEFAULT_INTROSPECTION_MAX_CALLS_PER_SECOND: usize = 100;
/// Default `dpop_proofs.max_age`.
pub const DEFAULT_DPOP_MAX_AGE: Duration = Duration::from_secs(60);
/// Default `dpop_proofs.leeway`.
pub const DEFAULT_DPOP_LEEWAY: Duration = Duration::from_secs(5);
/// Default `dpop_proofs.replay_cache_capacity`.
pub const DEFAULT_DPOP_REPLAY_CAPACITY: usize = 100_000;
/// Default `dpop_proofs.max_bytes`.
pub const DEFAULT_DPOP_MAX_BYTES: usize = 4096;
/// Default cookie carrying a token when the cookie source is enabled.
pub const DEFAULT_TOKEN_COOKIE: &str = "access_token";
/// Default header carrying a token when the custom header source is enabled.
pub const DEFAULT_TOKEN_HEADER: &str = "X-Api-Token";
/// Default query parameter carrying a token when the query source is enabled.
pub const DEFAULT_QUERY_PARAMETER: &str = "access_token";

/// Algorithms accepted when the config names none.
pub const DEFAULT_ALGORITHMS: [Alg; 9] = Alg::ALL;

/// The YAML file as written. Every field is optional; defaults are applied by `validate()`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Listen addresses.
    #[serde(default)]
    pub listen: RawListen,
    /// Log output.
    #[serde(default)]
    pub log: RawLog,
    /// Trusted token issuers and where their keys come from.
    #[serde(default)]
    pub issuers: Vec<RawIssuer>,
    /// Audiences a token must carry (any of them, or all with `audience_match: all`).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// `any` (default) or `all`.
    pub audience_match: Option<String>,
    /// Accepted signature algorithms for every issuer that does not name its own.
    pub algorithms: Option<Vec<String>>,
    /// Clock leeway for `exp`, `nbf`, `iat`, e.g. `30s`.
    pub leeway: Option<String>,
    /// Accepted values of the JOSE `typ` header (e.g. `at+jwt`); unset means not checked.
    pub required_typ: Option<Vec<String>>,
    /// Longest `exp - iat` accepted, e.g. `1h`; such a token needs `iat`. Unset: not checked.
    pub max_token_lifetime: Option<String>,
    /// Claims every token must carry (e.g. RFC 9068's `sub`, `client_id`, `jti`, `iat`); `sub`
    /// must then be a string. Default none.
    pub required_claims: Option<Vec<String>>,
    /// Where tokens are read from.
    #[serde(default)]
    pub token: RawToken,
    /// Claims copied into upstream headers. Unset means `sub` and `iss`.
    pub claim_headers: Option<Vec<RawClaimHeader>>,
    /// Longest claim header value in bytes; longer values are omitted.
    pub max_claim_header_bytes: Option<usize>,
    /// The whole verified payload, base64url, in one header for the upstream (off by default).
    #[serde(default)]
    pub payload_header: RawPayloadHeader,
    /// Requirements every token must meet (on top of issuer and audience).
    #[serde(default)]
    pub require: RawRequirement,
    /// Peers (IP networks) whose description of the original request (forwarded method, host,
    /// path; Envoy's request attributes) is believed. Default: every peer. From any other peer
    /// those are ignored, so route rules that need them deny the check as malformed.
    pub trusted_proxies: Option<Vec<String>>,
    /// Per-route rules, first match wins; unmatched requests need a valid token.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// Key cache and fetch bounds.
    #[serde(default)]
    pub keys: RawKeys,
    /// Cache of verified signatures.
    #[serde(default)]
    pub verified_cache: RawVerifiedCache,
    /// Request limits.
    #[serde(default)]
    pub limits: RawLimits,
    /// Shutdown timing.
    #[serde(default)]
    pub shutdown: RawShutdown,
    /// HTTP endpoint settings.
    #[serde(default)]
    pub http: RawHttp,
    /// The request header in which a proxy passes the client's TLS certificate (URL-encoded
    /// PEM, or PEM or base64 DER), for certificate-bound tokens on `/auth`, `/auth/nginx` and
    /// `/envoy/*`; believed from `trusted_proxies` only.
    pub client_cert_header: Option<String>,
    /// Bounds of the password grant.
    #[serde(default)]
    pub password_grant: RawPasswordGrant,
    /// How DPoP proofs are checked (for issuers with `dpop` on).
    #[serde(default)]
    pub dpop_proofs: RawDpopProofs,
    /// The RFC 9728 protected-resource metadata, served at
    /// `/.well-known/oauth-protected-resource` and named in 401 challenges.
    pub resource_metadata: Option<RawResourceMetadata>,
}

/// `listen:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    /// Forward-auth HTTP endpoints, default `0.0.0.0:8080`.
    pub http: Option<String>,
    /// gRPC services, default `0.0.0.0:9001`.
    pub grpc: Option<String>,
    /// Admin endpoints, default `0.0.0.0:9090`.
    pub admin: Option<String>,
}

/// `log:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `text` (default) or `json`.
    pub format: Option<String>,
    /// A tracing filter such as `info` or `authgate=debug`.
    pub level: Option<String>,
}

/// One entry of `issuers:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    /// The exact `iss` value; also the discovery base URL unless keys come from elsewhere.
    pub issuer: Option<String>,
    /// Fetch keys from this JWKS URL instead of using discovery.
    pub jwks_uri: Option<String>,
    /// Load keys from a local JWKS file instead of fetching.
    pub jwks_file: Option<PathBuf>,
    /// Load one public key from a PEM file instead of fetching.
    pub pem_file: Option<PathBuf>,
    /// Algorithm of the PEM key (required with `pem_file`).
    pub pem_alg: Option<String>,
    /// Key id of the PEM key; tokens without a kid match it too.
    pub pem_kid: Option<String>,
    /// Accepted algorithms for this issuer (default: the top-level `algorithms`).
    pub algorithms: Option<Vec<String>>,
    /// Audiences for this issuer (default: the top-level `audiences`).
    pub audiences: Option<Vec<String>>,
    /// Allow `http://` URLs for a non-loopback issuer (never do this in production).
    #[serde(default)]
    pub allow_http: bool,
    /// How requests may authenticate against this issuer: `bearer` (a token it issued) and
    /// `password` (HTTP Basic credentials exchanged at its token endpoint). Default `[bearer]`.
    pub auth_methods: Option<Vec<String>>,
    /// The client id authgate uses at this issuer's token endpoint.
    pub client_id: Option<String>,
    /// `client_secret_basic`, `client_secret_post` or `private_key_jwt` (default: basic with a
    /// secret, private_key_jwt with a key).
    pub client_auth: Option<String>,
    /// The client secret (for `client_secret_*`).
    pub client_secret: Option<Secret>,
    /// A file holding the client secret (trailing newline ignored).
    pub client_secret_file: Option<PathBuf>,
    /// A file holding the client's private JWK (for `private_key_jwt`); its `alg` and `kid`
    /// are used.
    pub client_jwk_file: Option<PathBuf>,
    /// The token endpoint; default: the discovery document's `token_endpoint`.
    pub token_endpoint: Option<String>,
    /// Clock leeway for this issuer's tokens (default: the top-level `leeway`).
    pub leeway: Option<String>,
    /// Accepted `typ` values for this issuer (default: the top-level `required_typ`).
    pub required_typ: Option<Vec<String>>,
    /// `any` or `all` for this issuer (default: the top-level `audience_match`).
    pub audience_match: Option<String>,
    /// Longest `exp - iat` of this issuer's tokens (default: the top-level one).
    pub max_token_lifetime: Option<String>,
    /// Claims this issuer's tokens must carry (default: the top-level list).
    pub required_claims: Option<Vec<String>>,
    /// Claim headers for this issuer's tokens, replacing the top-level list (a route's own
    /// list wins over both).
    pub claim_headers: Option<Vec<RawClaimHeader>>,
    /// Certificate-bound tokens (RFC 8705): `off` (default), `optional` (a token with
    /// `cnf.x5t#S256` needs the matching client certificate) or `strict` (every token needs
    /// one).
    pub proof_of_possession_mtls: Option<String>,
    /// DPoP-bound tokens (RFC 9449): `off` (default), `optional` (`Authorization: DPoP` with a
    /// proof is checked; a bearer token is accepted unless it carries `cnf.jkt`) or `required`
    /// (every token needs a proof).
    pub dpop: Option<String>,
    /// Opaque tokens verified at the issuer's introspection endpoint (RFC 7662).
    #[serde(default)]
    pub introspection: RawIntrospection,
    /// Also ask the introspection endpoint about this issuer's JWTs, after local verification
    /// (a revocation check).
    #[serde(default)]
    pub introspect_jwts: bool,
}

/// An issuer's `introspection:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntrospection {
    /// Verify opaque tokens at this issuer (default false).
    #[serde(default)]
    pub enabled: bool,
    /// The introspection endpoint; default: the discovery document's `introspection_endpoint`.
    pub endpoint: Option<String>,
    /// How long an active result is remembered at most (default 1m; never past its `exp`).
    pub cache_ttl: Option<String>,
    /// How long an inactive result is remembered (default 10s).
    pub negative_ttl: Option<String>,
    /// Results remembered at most (default 100000).
    pub cache_capacity: Option<usize>,
    /// Calls to the endpoint per second at most (default 100); the excess is `unavailable`.
    pub max_calls_per_second: Option<usize>,
}

/// `dpop_proofs:` section: how DPoP proofs (RFC 9449 §4) are checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDpopProofs {
    /// Accepted proof algorithms (default: every supported asymmetric one).
    pub algorithms: Option<Vec<String>>,
    /// How old a proof's `iat` may be (default 60s); also how long a `jti` is remembered.
    pub max_age: Option<String>,
    /// How far in the future a proof's `iat` may be (default 5s).
    pub leeway: Option<String>,
    /// Proof `jti`s remembered at most for replay detection (default 100000).
    pub replay_cache_capacity: Option<usize>,
    /// Largest accepted proof in bytes (default 4096).
    pub max_bytes: Option<usize>,
}

/// `resource_metadata:` section: the RFC 9728 protected-resource metadata document.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResourceMetadata {
    /// The resource identifier (an https URL, without query or fragment).
    pub resource: Option<String>,
    /// Issuer identifiers of the authorization servers clients may use.
    pub authorization_servers: Option<Vec<String>>,
    /// Scopes clients may request for this resource.
    pub scopes_supported: Option<Vec<String>>,
}

/// A secret from the config file; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `secret`.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `password_grant:` section: bounds of the exchange of Basic credentials for tokens.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPasswordGrant {
    /// Exchanged tokens and failed exchanges remembered at most (default 10000).
    pub cache_capacity: Option<usize>,
    /// A remembered token is exchanged anew this long before it expires (default 30s).
    pub refresh_before: Option<String>,
    /// How long a refused exchange (wrong password) is remembered (default 10s).
    pub negative_ttl: Option<String>,
    /// Exchanges per user name per minute at most (default 10); more are answered
    /// `unavailable` without asking the IdP.
    pub max_exchanges_per_minute: Option<usize>,
    /// Extra form parameters of the token request, e.g. `{scope: "openid api"}`.
    pub params: Option<std::collections::BTreeMap<String, String>>,
}

/// `token:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    /// Largest accepted token in bytes (default 8192).
    pub max_bytes: Option<usize>,
    /// Read the token from the `Authorization: Bearer` header (default true).
    pub header: Option<bool>,
    /// Also read the token from a query parameter of the original URI.
    #[serde(default)]
    pub query: RawQuery,
    /// Also read the token from a cookie.
    #[serde(default)]
    pub cookie: RawCookie,
    /// Also read the token from a header of its own (an API-gateway habit).
    #[serde(default)]
    pub custom_header: RawCustomHeader,
    /// Remove the token from the request before it goes upstream (the `Authorization` header
    /// or the query parameter). Applies where authgate can say so: Envoy ext_authz gRPC (both)
    /// and Envoy's HTTP mode (the header).
    pub strip_upstream: Option<bool>,
}

/// `token.query:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuery {
    /// Off by default.
    #[serde(default)]
    pub enabled: bool,
    /// Parameter name, default `access_token`.
    pub name: Option<String>,
}

/// `payload_header:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPayloadHeader {
    /// Off by default.
    #[serde(default)]
    pub enabled: bool,
    /// Header name, default `X-Auth-Payload`.
    pub name: Option<String>,
}

/// `token.cookie:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCookie {
    /// Off by default.
    #[serde(default)]
    pub enabled: bool,
    /// Cookie name, default `access_token`.
    pub name: Option<String>,
}

/// `token.custom_header:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCustomHeader {
    /// Off by default.
    #[serde(default)]
    pub enabled: bool,
    /// Header name, default `X-Api-Token`.
    pub name: Option<String>,
    /// Stripped from the value, e.g. `"Token "` (compared without regard to ASCII case);
    /// default none.
    pub prefix: Option<String>,
}

/// One entry of `claim_headers:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClaimHeader {
    /// Claim path, dot-separated for nested claims (`realm_access.roles`).
    pub claim: String,
    /// Header name sent upstream.
    pub header: String,
}

/// A requirement on a token: used top-level (`require:`) and per route.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequirement {
    /// Only tokens of these issuers.
    pub issuers: Option<Vec<String>>,
    /// Audiences for this requirement (replaces the issuer's audiences).
    pub audiences: Option<Vec<String>>,
    /// Scopes that must all be granted (`scope` string or `scp` array).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Claim conditions that must all hold.
    #[serde(default)]
    pub claims: Vec<RawClaimCondition>,
}

/// One claim condition.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClaimCondition {
    /// Claim path, dot-separated.
    pub claim: Option<String>,
    /// The claim (or one element of it, if an array) equals this.
    pub equals: Option<String>,
    /// The claim (or one element of it) is one of these.
    pub one_of: Option<Vec<String>>,
    /// The claim is a string with exactly one `@` whose domain is one of these (any letter
    /// case): oauth2-proxy's `--email-domain`.
    pub email_domain: Option<Vec<String>>,
}

/// One entry of `routes:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Exact host (case-insensitive, port ignored); unset matches any.
    pub host: Option<String>,
    /// Path prefix on a segment boundary (`/api` matches `/api` and `/api/x`, not `/apix`).
    pub path_prefix: Option<String>,
    /// Glob over the path: `*` within a segment, `**` across segments.
    pub path_glob: Option<String>,
    /// Methods (upper-case); unset matches any.
    pub methods: Option<Vec<String>>,
    /// `anonymous`, `deny` or `require` (default `require`).
    pub action: Option<String>,
    /// What the token must satisfy when the action is `require`.
    #[serde(default)]
    pub require: RawRequirement,
    /// Where this route's tokens are read from: a whole `token:` section that replaces the
    /// top-level one on this route.
    pub token: Option<RawToken>,
    /// Claim headers on this route, replacing the top-level (and the issuer's) list.
    pub claim_headers: Option<Vec<RawClaimHeader>>,
}

/// `keys:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    /// Lower clamp for `Cache-Control: max-age` (default 1m).
    pub min_ttl: Option<String>,
    /// Upper clamp for `Cache-Control: max-age` (default 1h).
    pub max_ttl: Option<String>,
    /// Lifetime without `Cache-Control: max-age` (default 10m).
    pub default_ttl: Option<String>,
    /// After an unknown-kid refetch, no further one for this long (default 30s).
    pub unknown_kid_cooldown: Option<String>,
    /// Serve the last good key set this long while the IdP fails (default 24h).
    pub max_stale: Option<String>,
    /// Connect timeout for key fetches (default 2s).
    pub connect_timeout: Option<String>,
    /// Total timeout for one key fetch (default 5s).
    pub fetch_timeout: Option<String>,
    /// Largest response accepted from the IdP in bytes (default 1 MiB).
    pub max_body_bytes: Option<usize>,
    /// Most keys accepted in one JWKS (default 100).
    pub max_keys: Option<usize>,
    /// First retry delay after a failed fetch (default 1s).
    pub retry_initial: Option<String>,
    /// Longest retry delay (default 30s).
    pub retry_max: Option<String>,
}

/// `verified_cache:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerifiedCache {
    /// Tokens remembered at most (default 100000; 0 turns the cache off). Times, the route's
    /// issuers, audiences, scopes and claims are still checked on every request; parsing and the
    /// signature check are skipped, and only while the issuer's key set is unchanged.
    pub capacity: Option<u64>,
    /// Bytes the cache may hold at most (default 64 MiB).
    pub max_bytes: Option<u64>,
    /// Longer tokens are not cached (default 8192).
    pub max_token_bytes: Option<usize>,
    /// Longest time one verification is remembered (default 5m).
    pub ttl: Option<String>,
    /// Slots of the index of recently seen tokens, which answers a repeated token by comparing
    /// its bytes instead of hashing them (default 1024; 0 turns it off).
    pub recent_slots: Option<usize>,
}

/// `limits:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Per-check deadline (default 150ms).
    pub check_deadline: Option<String>,
    /// Checks served at once; more are shed with an "unavailable" deny (default 1024).
    pub max_concurrent_checks: Option<usize>,
    /// Cap on all request headers of one HTTP request (default 32768).
    pub max_header_bytes: Option<usize>,
    /// Time a client gets to send its request headers (default 5s).
    pub header_read_timeout: Option<String>,
    /// Open connections per listener (default 4096); more wait until one closes.
    pub max_connections: Option<usize>,
}

/// `shutdown:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    /// Keep serving this long after SIGTERM while reporting not ready (default 5s).
    pub grace: Option<String>,
    /// Then wait at most this long for in-flight requests (default 10s).
    pub drain_timeout: Option<String>,
}

/// `http:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// Prefix of the Envoy ext_authz HTTP endpoint (default `/envoy`).
    pub envoy_prefix: Option<String>,
    /// Realm in `WWW-Authenticate` challenges (default `authgate`).
    pub realm: Option<String>,
}
