//! Validation: the raw config into the typed [`Config`], one function per section, every
//! problem collected with its field (`issuers[0].audiences: ...`) instead of stopping at the
//! first.

use std::net::SocketAddr;
use std::time::Duration;

use super::raw::*;
use super::{
    AudienceMatch, AuthMethods, ClaimHeaderConfig, ClientAuth, ClientConfig, Config, ConfigError,
    CustomHeader, DpopMode, DpopProofConfig, FieldError, HttpConfig, IntrospectionConfig,
    IssuerConfig, KeyCacheConfig, KeySourceConfig, Limits, Listen, LogConfig, LogFormat,
    PasswordGrantConfig, PathMatch, PopMtls, Requirement, ResourceMetadata, Route, RouteAction,
    ShutdownConfig, TokenConfig, VerifiedCacheConfig, VerifyConfig,
};
use crate::claims::{ClaimMatch, ClaimPath, ClaimRequirement};
use crate::demo::signing::SigningKey;
use crate::verify::Alg;

/// Upper bound of every duration setting.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Upper bound of every count and size setting.
const MAX_COUNT: usize = 1_000_000_000;
/// Claim headers at most (a verified token keeps which of them it has in 64 bits).
const MAX_CLAIM_HEADERS: usize = 64;

impl RawConfig {
    /// Validates the raw config into a [`Config`], reporting every problem at once.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let raw = self;
        let mut p = Problems::default();
        let verify = verify_settings(
            &RawVerify {
                leeway: raw.leeway.as_ref(),
                audience_match: raw.audience_match.as_deref(),
                required_typ: raw.required_typ.as_ref(),
                max_token_lifetime: raw.max_token_lifetime.as_ref(),
                required_claims: raw.required_claims.as_ref(),
            },
            "",
            None,
            &mut p,
        );
        let issuers = issuers(raw, &verify, &mut p);
        let require = p.requirement("require", &raw.require);
        check_requirement_issuers(&mut p, "require", &require, &issuers);
        let (claim_headers, issuer_mappings, route_mappings) = claim_headers(raw, &mut p);
        let mut issuers = issuers;
        let mut routes = routes(raw, &mut p, &issuers);
        // An invalid entry may have been left out of either list: the mappings then go by
        // position only where nothing was (the config is rejected anyway).
        if issuers.len() == issuer_mappings.len() {
            for (issuer, mapping) in issuers.iter_mut().zip(issuer_mappings) {
                issuer.claim_headers = mapping;
            }
        }
        if routes.len() == route_mappings.len() {
            for (route, mapping) in routes.iter_mut().zip(route_mappings) {
                route.claim_headers = mapping;
            }
        }
        let config = Config {
            listen: listen(raw, &mut p),
            log: log(raw, &mut p),
            routes,
            issuers,
            verify,
            token: token(&raw.token, "token", &mut p),
            claim_headers,
            require,
            trusted_proxies: trusted_proxies(raw, &mut p),
            keys: keys(&raw.keys, &mut p),
            verified_cache: verified_cache(&raw.verified_cache, &mut p),
            limits: limits(&raw.limits, &mut p),
            shutdown: shutdown(&raw.shutdown, &mut p),
            http: http(&raw.http, &mut p),
            client_cert_header: raw
                .client_cert_header
                .as_deref()
                .and_then(|name| header_name(&mut p, "client_cert_header", name)),
            password_grant: password_grant(&raw.password_grant, &mut p),
            dpop_proofs: dpop_proofs(&raw.dpop_proofs, &mut p),
            resource_metadata: resource_metadata(raw.resource_metadata.as_ref(), &mut p),
        };
        if p.0.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(p.0))
        }
    }
}

fn listen(raw: &RawConfig, p: &mut Problems) -> Listen {
    let listen = Listen {
        http: p.addr("listen.http", raw.listen.http.as_ref(), DEFAULT_HTTP_LISTEN),
        grpc: p.addr("listen.grpc", raw.listen.grpc.as_ref(), DEFAULT_GRPC_LISTEN),
        admin: p.addr(
            "listen.admin",
            raw.listen.admin.as_ref(),
            DEFAULT_ADMIN_LISTEN,
        ),
    };
    if listen.http.port() != 0 && listen.http == listen.admin {
        p.add("listen.admin", "must differ from listen.http");
    }
    listen
}

fn log(raw: &RawConfig, p: &mut Problems) -> LogConfig {
    let format = match raw.log.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            p.add("log.format", format!("{other:?} is not text or json"));
            LogFormat::Text
        }
    };
    LogConfig {
        format,
        level: raw.log.level.clone().unwrap_or_else(|| "info".to_owned()),
    }
}

fn issuers(config: &RawConfig, top: &VerifyConfig, p: &mut Problems) -> Vec<IssuerConfig> {
    let default_algs = match &config.algorithms {
        Some(names) => p.algorithms("algorithms", names),
        None => DEFAULT_ALGORITHMS.to_vec(),
    };
    for (i, a) in config.audiences.iter().enumerate() {
        if a.is_empty() {
            p.add(format!("audiences[{i}]"), "must not be empty");
        }
    }

    if config.issuers.is_empty() {
        p.add(
            "issuers",
            "at least one issuer is required (config file, --issuer or AUTHGATE_ISSUER)",
        );
    }
    let mut issuers: Vec<IssuerConfig> = Vec::new();
    for (i, raw) in config.issuers.iter().enumerate() {
        let f = format!("issuers[{i}]");
        let Some(issuer) = raw.issuer.clone().filter(|s| !s.is_empty()) else {
            p.add(format!("{f}.issuer"), "is required");
            continue;
        };
        if issuers.iter().any(|o| o.issuer == issuer) {
            p.add(
                format!("{f}.issuer"),
                format!("{issuer:?} is configured twice"),
            );
        }
        let source = match (&raw.jwks_uri, &raw.jwks_file, &raw.pem_file) {
            (None, None, None) => {
                check_url(p, &format!("{f}.issuer"), &issuer, raw.allow_http);
                KeySourceConfig::Discovery
            }
            (Some(uri), None, None) => {
                check_url(p, &format!("{f}.jwks_uri"), uri, raw.allow_http);
                KeySourceConfig::JwksUri(uri.clone())
            }
            (None, Some(path), None) => KeySourceConfig::JwksFile(path.clone()),
            (None, None, Some(path)) => match raw.pem_alg.as_deref().map(str::parse::<Alg>) {
                Some(Ok(alg)) => KeySourceConfig::PemFile {
                    path: path.clone(),
                    alg,
                    kid: raw.pem_kid.clone(),
                },
                Some(Err(e)) => {
                    p.add(format!("{f}.pem_alg"), e.to_string());
                    continue;
                }
                None => {
                    p.add(format!("{f}.pem_alg"), "is required with pem_file");
                    continue;
                }
            },
            _ => {
                p.add(
                    f.clone(),
                    "give at most one of jwks_uri, jwks_file, pem_file",
                );
                continue;
            }
        };
        if !matches!(source, KeySourceConfig::PemFile { .. })
            && (raw.pem_alg.is_some() || raw.pem_kid.is_some())
        {
            p.add(
                format!("{f}.pem_alg"),
                "pem_alg and pem_kid only go with pem_file",
            );
        }
        let algorithms = match &raw.algorithms {
            Some(names) => p.algorithms(&format!("{f}.algorithms"), names),
            None => default_algs.clone(),
        };
        let audiences = raw
            .audiences
            .clone()
            .unwrap_or_else(|| config.audiences.clone());
        if audiences.is_empty() {
            p.add(
                    format!("{f}.audiences"),
                    "no audience configured for this issuer (audiences, --audience or AUTHGATE_AUDIENCE); \
                     a token must be checked for its audience",
                );
        }
        let auth_methods = auth_methods(raw, &f, p);
        let client = client(raw, &f, p);
        if auth_methods.password && client.is_none() && raw.client_id.is_none() {
            p.add(
                format!("{f}.client_id"),
                "the password method needs client_id (and its client authentication)",
            );
        }
        if let Some(endpoint) = &raw.token_endpoint {
            check_url(p, &format!("{f}.token_endpoint"), endpoint, raw.allow_http);
        } else if auth_methods.password && source != KeySourceConfig::Discovery {
            p.add(
                format!("{f}.token_endpoint"),
                "the password method needs token_endpoint when keys do not come from discovery",
            );
        }
        if auth_methods.password
            && let Some(first) = issuers.iter().position(|i| i.auth_methods.password)
        {
            p.add(
                format!("{f}.auth_methods"),
                format!(
                    "only one issuer may use the password method (issuers[{first}] does): \
                     Basic credentials do not say which issuer to ask"
                ),
            );
        }
        let proof_of_possession_mtls = match raw.proof_of_possession_mtls.as_deref() {
            None | Some("off") => PopMtls::Off,
            Some("optional") => PopMtls::Optional,
            Some("strict") => PopMtls::Strict,
            Some(other) => {
                p.add(
                    format!("{f}.proof_of_possession_mtls"),
                    format!("{other:?} is not off, optional or strict"),
                );
                PopMtls::Off
            }
        };
        let dpop = match raw.dpop.as_deref() {
            None | Some("off") => DpopMode::Off,
            Some("optional") => DpopMode::Optional,
            Some("required") => DpopMode::Required,
            Some(other) => {
                p.add(
                    format!("{f}.dpop"),
                    format!("{other:?} is not off, optional or required"),
                );
                DpopMode::Off
            }
        };
        let introspection = introspection(raw, &f, source == KeySourceConfig::Discovery, p);
        if raw.introspect_jwts && introspection.is_none() && !raw.introspection.enabled {
            p.add(
                format!("{f}.introspect_jwts"),
                "needs introspection.enabled: true",
            );
        }
        if (raw.introspection.enabled || raw.introspect_jwts)
            && client.is_none()
            && raw.client_id.is_none()
        {
            p.add(
                format!("{f}.client_id"),
                "introspection needs client_id (and its client authentication)",
            );
        }
        issuers.push(IssuerConfig {
            dpop,
            introspection,
            introspect_jwts: raw.introspect_jwts,
            issuer,
            source,
            algorithms,
            audiences,
            allow_http: raw.allow_http,
            auth_methods,
            client,
            token_endpoint: raw.token_endpoint.clone(),
            proof_of_possession_mtls,
            claim_headers: None,
            verify: verify_settings(
                &RawVerify {
                    leeway: raw.leeway.as_ref(),
                    audience_match: raw.audience_match.as_deref(),
                    required_typ: raw.required_typ.as_ref(),
                    max_token_lifetime: raw.max_token_lifetime.as_ref(),
                    required_claims: raw.required_claims.as_ref(),
                },
                &format!("{f}."),
                Some(top),
                p,
            ),
        });
    }
    issuers
}

/// An issuer's `introspection` section: `None` when it is off.
fn introspection(
    raw: &RawIssuer,
    f: &str,
    discovery: bool,
    p: &mut Problems,
) -> Option<IntrospectionConfig> {
    let r = &raw.introspection;
    let f = format!("{f}.introspection");
    if let Some(endpoint) = &r.endpoint {
        check_url(p, &format!("{f}.endpoint"), endpoint, raw.allow_http);
    } else if r.enabled && !discovery {
        p.add(
            format!("{f}.endpoint"),
            "is required when keys do not come from discovery",
        );
    }
    let config = IntrospectionConfig {
        endpoint: r.endpoint.clone(),
        cache_ttl: p.duration(
            &format!("{f}.cache_ttl"),
            r.cache_ttl.as_ref(),
            DEFAULT_INTROSPECTION_CACHE_TTL,
        ),
        negative_ttl: p.duration(
            &format!("{f}.negative_ttl"),
            r.negative_ttl.as_ref(),
            DEFAULT_INTROSPECTION_NEGATIVE_TTL,
        ),
        cache_capacity: p.positive(
            &format!("{f}.cache_capacity"),
            r.cache_capacity,
            DEFAULT_INTROSPECTION_CACHE_CAPACITY,
        ),
        max_calls_per_second: p.positive(
            &format!("{f}.max_calls_per_second"),
            r.max_calls_per_second,
            DEFAULT_INTROSPECTION_MAX_CALLS_PER_SECOND,
        ),
    };
    r.enabled.then_some(config)
}

/// `dpop_proofs`.
fn dpop_proofs(raw: &RawDpopProofs, p: &mut Problems) -> DpopProofConfig {
    let config = DpopProofConfig {
        algorithms: match &raw.algorithms {
            Some(names) => p.algorithms("dpop_proofs.algorithms", names),
            None => DEFAULT_ALGORITHMS.to_vec(),
        },
        max_age: p.duration(
            "dpop_proofs.max_age",
            raw.max_age.as_ref(),
            DEFAULT_DPOP_MAX_AGE,
        ),
        leeway: p.duration(
            "dpop_proofs.leeway",
            raw.leeway.as_ref(),
            DEFAULT_DPOP_LEEWAY,
        ),
        replay_cache_capacity: p.positive(
            "dpop_proofs.replay_cache_capacity",
            raw.replay_cache_capacity,
            DEFAULT_DPOP_REPLAY_CAPACITY,
        ),
        max_bytes: p.positive(
            "dpop_proofs.max_bytes",
            raw.max_bytes,
            DEFAULT_DPOP_MAX_BYTES,
        ),
    };
    if config.max_age.is_zero() {
        p.add("dpop_proofs.max_age", "must be greater than 0");
    }
    config
}

/// `resource_metadata`: the resource must be an absolute https (or loopback http) URL without
/// query or fragment; the document's URL is formed from it as RFC 9728 §3.1 says (the
/// well-known segment between the host and the resource's path).
fn resource_metadata(
    raw: Option<&RawResourceMetadata>,
    p: &mut Problems,
) -> Option<ResourceMetadata> {
    const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";
    let raw = raw?;
    let f = "resource_metadata";
    let Some(resource) = raw.resource.clone().filter(|r| !r.is_empty()) else {
        p.add(format!("{f}.resource"), "is required");
        return None;
    };
    check_url(p, &format!("{f}.resource"), &resource, false);
    if resource.contains(['?', '#']) {
        p.add(
            format!("{f}.resource"),
            "must not have a query or fragment (RFC 9728 §2)",
        );
    }
    if resource.contains(['"', '\\']) || resource.chars().any(|c| c.is_control() || c == ' ') {
        p.add(format!("{f}.resource"), "must be a plain URL");
        return None;
    }
    let after_scheme = resource.split_once("://").map_or("", |(_, rest)| rest);
    let (authority, path) = match after_scheme.find('/') {
        Some(slash) => after_scheme.split_at(slash),
        None => (after_scheme, ""),
    };
    let scheme = resource.split_once("://").map_or("https", |(s, _)| s);
    let path = format!("{WELL_KNOWN}{}", path.trim_end_matches('/'));
    let list = |p: &mut Problems, name: &str, items: &Option<Vec<String>>| {
        let items = items.clone().unwrap_or_default();
        for (i, item) in items.iter().enumerate() {
            if item.is_empty() {
                p.add(format!("{f}.{name}[{i}]"), "must not be empty");
            }
        }
        items
    };
    let authorization_servers = list(p, "authorization_servers", &raw.authorization_servers);
    for (i, server) in authorization_servers.iter().enumerate() {
        check_url(p, &format!("{f}.authorization_servers[{i}]"), server, false);
    }
    Some(ResourceMetadata {
        url: format!("{scheme}://{authority}{path}"),
        path,
        authorization_servers,
        scopes_supported: list(p, "scopes_supported", &raw.scopes_supported),
        resource,
    })
}

/// An issuer's `auth_methods`.
fn auth_methods(raw: &RawIssuer, f: &str, p: &mut Problems) -> AuthMethods {
    let Some(names) = &raw.auth_methods else {
        return AuthMethods::default();
    };
    let mut methods = AuthMethods {
        bearer: false,
        password: false,
    };
    if names.is_empty() {
        p.add(format!("{f}.auth_methods"), "must name at least one method");
        return AuthMethods::default();
    }
    for (i, name) in names.iter().enumerate() {
        match name.as_str() {
            "bearer" => methods.bearer = true,
            "password" => methods.password = true,
            other => p.add(
                format!("{f}.auth_methods[{i}]"),
                format!("{other:?} is not bearer or password"),
            ),
        }
    }
    methods
}

/// An issuer's client settings: `None` when no `client_id` is given (then none of the others
/// may be), or when they are unusable (each problem reported with its field).
fn client(raw: &RawIssuer, f: &str, p: &mut Problems) -> Option<ClientConfig> {
    let secret_given = raw.client_secret.is_some() || raw.client_secret_file.is_some();
    let Some(id) = &raw.client_id else {
        if raw.client_auth.is_some() || secret_given || raw.client_jwk_file.is_some() {
            p.add(
                format!("{f}.client_id"),
                "is required with client_auth, client_secret, client_secret_file or client_jwk_file",
            );
        }
        return None;
    };
    if id.is_empty() {
        p.add(format!("{f}.client_id"), "must not be empty");
        return None;
    }
    let method = match raw.client_auth.as_deref() {
        Some(method) => method,
        None if raw.client_jwk_file.is_some() => "private_key_jwt",
        None if secret_given => "client_secret_basic",
        None => {
            p.add(
                format!("{f}.client_auth"),
                "client_id needs a client authentication: client_secret, client_secret_file \
                 or client_jwk_file",
            );
            return None;
        }
    };
    let auth = match method {
        "client_secret_basic" | "client_secret_post" => {
            if raw.client_jwk_file.is_some() {
                p.add(
                    format!("{f}.client_jwk_file"),
                    format!("goes with private_key_jwt, not {method}"),
                );
            }
            let secret = client_secret(raw, f, p)?;
            if method == "client_secret_basic" {
                ClientAuth::SecretBasic(secret)
            } else {
                ClientAuth::SecretPost(secret)
            }
        }
        "private_key_jwt" => {
            if secret_given {
                p.add(
                    format!("{f}.client_secret"),
                    "goes with client_secret_basic or client_secret_post, not private_key_jwt",
                );
            }
            ClientAuth::PrivateKeyJwt(client_key(raw, f, p)?)
        }
        other => {
            p.add(
                format!("{f}.client_auth"),
                format!(
                    "{other:?} is not client_secret_basic, client_secret_post or private_key_jwt"
                ),
            );
            return None;
        }
    };
    Some(ClientConfig {
        id: id.clone(),
        auth,
    })
}

/// The client secret, from the config or its file.
fn client_secret(raw: &RawIssuer, f: &str, p: &mut Problems) -> Option<Secret> {
    let secret = match (&raw.client_secret, &raw.client_secret_file) {
        (Some(_), Some(_)) => {
            p.add(
                format!("{f}.client_secret"),
                "give client_secret or client_secret_file, not both",
            );
            return None;
        }
        (Some(secret), None) => secret.clone(),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => Secret::new(text.trim_end_matches(['\r', '\n'])),
            Err(e) => {
                p.add(
                    format!("{f}.client_secret_file"),
                    format!("cannot read {}: {e}", path.display()),
                );
                return None;
            }
        },
        (None, None) => {
            p.add(
                format!("{f}.client_secret"),
                "client_secret_basic and client_secret_post need client_secret or client_secret_file",
            );
            return None;
        }
    };
    if secret.expose().is_empty() {
        p.add(format!("{f}.client_secret"), "must not be empty");
        return None;
    }
    Some(secret)
}

/// The client's private signing key, from `client_jwk_file` (one JWK, or a JWKS of one key).
fn client_key(raw: &RawIssuer, f: &str, p: &mut Problems) -> Option<SigningKey> {
    let field = format!("{f}.client_jwk_file");
    let Some(path) = &raw.client_jwk_file else {
        p.add(
            field,
            "private_key_jwt needs the client's private key (a JWK file)",
        );
        return None;
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            p.add(field, format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    let Ok(jwk) = serde_json::from_str::<serde_json::Value>(&text) else {
        p.add(field, format!("{} is not JSON", path.display()));
        return None;
    };
    let jwk = match jwk.get("keys").and_then(serde_json::Value::as_array) {
        Some(keys) if keys.len() == 1 => keys[0].clone(),
        Some(_) => {
            p.add(field, "a JWKS here must hold exactly one key");
            return None;
        }
        None => jwk,
    };
    match SigningKey::from_private_jwk(&jwk) {
        Ok(key) => Some(key),
        Err(e) => {
            p.add(field, format!("{}: {e}", path.display()));
            None
        }
    }
}

/// The verification settings as written at one level (top level or one issuer).
struct RawVerify<'a> {
    leeway: Option<&'a String>,
    audience_match: Option<&'a str>,
    required_typ: Option<&'a Vec<String>>,
    max_token_lifetime: Option<&'a String>,
    required_claims: Option<&'a Vec<String>>,
}

/// The verification settings at `prefix` (empty for the top level, `issuers[i].` for an
/// issuer): each one given there, else `inherit`'s, else the default.
fn verify_settings(
    raw: &RawVerify<'_>,
    prefix: &str,
    inherit: Option<&VerifyConfig>,
    p: &mut Problems,
) -> VerifyConfig {
    let audience_match = match raw.audience_match {
        None => inherit.map_or(AudienceMatch::Any, |i| i.audience_match),
        Some("any") => AudienceMatch::Any,
        Some("all") => AudienceMatch::All,
        Some(other) => {
            p.add(
                format!("{prefix}audience_match"),
                format!("{other:?} is not any or all"),
            );
            AudienceMatch::Any
        }
    };
    let leeway = match raw.leeway {
        Some(text) => p.duration(&format!("{prefix}leeway"), Some(text), DEFAULT_LEEWAY),
        None => inherit.map_or(DEFAULT_LEEWAY, |i| i.leeway),
    };
    if leeway > Duration::from_secs(600) {
        p.add(format!("{prefix}leeway"), "must be at most 10m");
    }
    let max_token_lifetime = match raw.max_token_lifetime {
        Some(text) => {
            let field = format!("{prefix}max_token_lifetime");
            let lifetime = p.duration(&field, Some(text), Duration::ZERO);
            if lifetime.is_zero() {
                p.add(field, "must be greater than 0");
            }
            Some(lifetime)
        }
        None => inherit.and_then(|i| i.max_token_lifetime),
    };
    let required_claims = match raw.required_claims {
        Some(names) => {
            for (i, name) in names.iter().enumerate() {
                if name.is_empty() {
                    p.add(format!("{prefix}required_claims[{i}]"), "must not be empty");
                }
            }
            names.clone()
        }
        None => inherit.map_or_else(Vec::new, |i| i.required_claims.clone()),
    };
    VerifyConfig {
        leeway,
        audience_match,
        required_typ: raw
            .required_typ
            .cloned()
            .or_else(|| inherit.and_then(|i| i.required_typ.clone())),
        max_token_lifetime,
        required_claims,
    }
}

/// A source switched on by `enabled` and named by `name` (else `default`), at `field`: its name
/// when on; a name without `enabled` is a problem (it would silently do nothing).
fn named_source(
    p: &mut Problems,
    field: &str,
    (enabled, name): (bool, Option<&String>),
    default: &str,
    what: &str,
) -> Option<String> {
    if enabled {
        Some(name.cloned().unwrap_or_else(|| default.to_owned()))
    } else {
        if name.is_some() {
            p.add(
                format!("{field}.name"),
                format!("set {field}.enabled: true to read tokens from {what}"),
            );
        }
        None
    }
}

fn token(raw: &RawToken, field: &str, p: &mut Problems) -> TokenConfig {
    let query = named_source(
        p,
        &format!("{field}.query"),
        (raw.query.enabled, raw.query.name.as_ref()),
        DEFAULT_QUERY_PARAMETER,
        "the query",
    );
    if query.as_deref() == Some("") {
        p.add(format!("{field}.query.name"), "must not be empty");
    }
    let cookie = named_source(
        p,
        &format!("{field}.cookie"),
        (raw.cookie.enabled, raw.cookie.name.as_ref()),
        DEFAULT_TOKEN_COOKIE,
        "a cookie",
    );
    // RFC 6265 §4.1.1: a cookie name is an RFC 7230 token.
    let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if let Some(name) = &cookie
        && (name.is_empty() || !name.chars().all(token_char))
    {
        p.add(
            format!("{field}.cookie.name"),
            format!("{name:?} is not a cookie name"),
        );
    }
    let custom_header = if raw.custom_header.enabled {
        let text = raw
            .custom_header
            .name
            .as_deref()
            .unwrap_or(DEFAULT_TOKEN_HEADER);
        let name_field = format!("{field}.custom_header.name");
        let name = header_name(p, &name_field, text);
        if let Some(name) = &name
            && matches!(name.as_str(), "authorization" | "cookie" | "host")
        {
            p.add(
                name_field,
                format!("{text:?} is read already or is not a token header"),
            );
        }
        let prefix = raw.custom_header.prefix.clone().unwrap_or_default();
        if prefix.chars().any(|c| !(' '..='~').contains(&c)) {
            p.add(
                format!("{field}.custom_header.prefix"),
                "must be printable ASCII",
            );
        }
        name.map(|name| CustomHeader { name, prefix })
    } else {
        if raw.custom_header.name.is_some() || raw.custom_header.prefix.is_some() {
            p.add(
                format!("{field}.custom_header"),
                format!("set {field}.custom_header.enabled: true to read tokens from a header"),
            );
        }
        None
    };
    let token = TokenConfig {
        max_bytes: p.positive(
            &format!("{field}.max_bytes"),
            raw.max_bytes,
            DEFAULT_MAX_TOKEN_BYTES,
        ),
        header: raw.header.unwrap_or(true),
        query,
        cookie,
        custom_header,
        strip_upstream: raw.strip_upstream.unwrap_or(false),
    };
    if !token.header
        && token.query.is_none()
        && token.cookie.is_none()
        && token.custom_header.is_none()
    {
        p.add(
            field,
            "no token source enabled (header, query, cookie or custom_header)",
        );
    }
    token
}

/// Every claim header mapping: the top-level one (or the default `sub` and `iss`), each
/// issuer's and each route's own, into one table of (claim, header) entries; a mapping is a bit
/// set over it. Returns the table and the issuers' and routes' own mappings, by position.
fn claim_headers(
    raw: &RawConfig,
    p: &mut Problems,
) -> (ClaimHeaderConfig, Vec<Option<u64>>, Vec<Option<u64>>) {
    let mut table: Vec<(ClaimPath, http::HeaderName)> = Vec::new();
    let default_mapping = match &raw.claim_headers {
        None => {
            table.push((
                ClaimPath::single("sub"),
                http::HeaderName::from_static("x-auth-subject"),
            ));
            table.push((
                ClaimPath::single("iss"),
                http::HeaderName::from_static("x-auth-issuer"),
            ));
            0b11
        }
        Some(list) => claim_header_mapping(list, "claim_headers", &mut table, p),
    };
    // Each issuer's and route's own list, by position.
    let mut own = |section: &str, lists: Vec<Option<&Vec<RawClaimHeader>>>| -> Vec<Option<u64>> {
        lists
            .into_iter()
            .enumerate()
            .map(|(i, list)| {
                let field = format!("{section}[{i}].claim_headers");
                list.map(|l| claim_header_mapping(l, &field, &mut table, p))
            })
            .collect()
    };
    let issuers = own(
        "issuers",
        raw.issuers
            .iter()
            .map(|x| x.claim_headers.as_ref())
            .collect(),
    );
    let routes = own(
        "routes",
        raw.routes
            .iter()
            .map(|x| x.claim_headers.as_ref())
            .collect(),
    );
    if table.len() > MAX_CLAIM_HEADERS {
        p.add(
            "claim_headers",
            format!(
                "at most {MAX_CLAIM_HEADERS} distinct claim headers in all (top level, issuers and routes together)"
            ),
        );
    }
    let payload_header = if raw.payload_header.enabled {
        let text = raw
            .payload_header
            .name
            .as_deref()
            .unwrap_or("X-Auth-Payload");
        let name = header_name(p, "payload_header.name", text);
        match name {
            Some(name) if reserved_header(name.as_str()) => {
                p.add(
                    "payload_header.name",
                    format!("{name} cannot carry a claim"),
                );
                None
            }
            Some(name) if table.iter().any(|(_, n)| *n == name) => {
                p.add(
                    "payload_header.name",
                    format!("{name} is a claim header already"),
                );
                None
            }
            name => name,
        }
    } else {
        if raw.payload_header.name.is_some() {
            p.add(
                "payload_header.name",
                "set payload_header.enabled: true to send the payload",
            );
        }
        None
    };
    let config = ClaimHeaderConfig {
        headers: table,
        default_mapping,
        payload_header,
        max_value_bytes: p.positive(
            "max_claim_header_bytes",
            raw.max_claim_header_bytes,
            DEFAULT_MAX_CLAIM_HEADER_BYTES,
        ),
    };
    (config, issuers, routes)
}

/// One claim header list at `field`: its entries added to `table` (each distinct entry once),
/// and the bit set of the entries it uses.
fn claim_header_mapping(
    list: &[RawClaimHeader],
    field: &str,
    table: &mut Vec<(ClaimPath, http::HeaderName)>,
    p: &mut Problems,
) -> u64 {
    let mut mapping = 0u64;
    let mut names: Vec<http::HeaderName> = Vec::new();
    for (i, h) in list.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let path = ClaimPath::parse(&h.claim)
            .map_err(|e| p.add(format!("{f}.claim"), e))
            .ok();
        let name = header_name(p, &format!("{f}.header"), &h.header);
        if let Some(name) = &name
            && reserved_header(name.as_str())
        {
            p.add(
                format!("{f}.header"),
                format!("{name} cannot carry a claim"),
            );
            continue;
        }
        let (Some(path), Some(name)) = (path, name) else {
            continue;
        };
        if names.contains(&name) {
            p.add(format!("{f}.header"), format!("{name} is mapped twice"));
            continue;
        }
        names.push(name.clone());
        let index = match table.iter().position(|(tp, tn)| *tp == path && *tn == name) {
            Some(index) => index,
            None => {
                table.push((path, name));
                table.len() - 1
            }
        };
        if index < 64 {
            mapping |= 1 << index;
        }
    }
    mapping
}

fn routes(raw: &RawConfig, p: &mut Problems, issuers: &[IssuerConfig]) -> Vec<Route> {
    let mut routes = Vec::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let f = format!("routes[{i}]");
        let path = match (&r.path_prefix, &r.path_glob) {
            (None, None) => PathMatch::Any,
            (Some(prefix), None) if prefix.starts_with('/') => {
                PathMatch::Prefix(prefix.trim_end_matches('/').to_owned())
            }
            (None, Some(glob)) if glob.starts_with('/') => PathMatch::Glob(glob.clone()),
            (Some(_), Some(_)) => {
                p.add(f.clone(), "give path_prefix or path_glob, not both");
                PathMatch::Any
            }
            _ => {
                p.add(format!("{f}.path_prefix"), "a path starts with /");
                PathMatch::Any
            }
        };
        let methods = r.methods.as_ref().map(|ms| {
            ms.iter()
                .map(|m| m.to_ascii_uppercase())
                .collect::<Vec<_>>()
        });
        let requirement = p.requirement(&format!("{f}.require"), &r.require);
        check_requirement_issuers(p, &format!("{f}.require"), &requirement, issuers);
        let action = match r.action.as_deref() {
            None | Some("require") => RouteAction::Require(requirement),
            Some("anonymous") => RouteAction::Anonymous,
            Some("deny") => RouteAction::Deny,
            Some(other) => {
                p.add(
                    format!("{f}.action"),
                    format!("{other:?} is not anonymous, deny or require"),
                );
                RouteAction::Deny
            }
        };
        let route = Route {
            host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
            path,
            methods,
            action,
            token: r.token.as_ref().map(|t| token(t, &format!("{f}.token"), p)),
            claim_headers: None,
        };
        if let Some(earlier) = routes.iter().position(|e| covers(e, &route)) {
            p.add(
                f,
                format!(
                    "can never match: routes[{earlier}] comes first, has no method restriction \
                     and matches every request this rule would (first match wins)"
                ),
            );
        }
        routes.push(route);
    }
    routes
}

/// Whether `earlier` matches every request `later` would, so that `later` never matches:
/// `earlier` has no method restriction, no host or the same host, and a path condition at least
/// as wide (any path; a prefix that contains `later`'s prefix, or the fixed segments of its
/// glob; the same glob). Conservative: a rule it cannot prove shadowed passes.
fn covers(earlier: &Route, later: &Route) -> bool {
    if earlier.methods.is_some() || (earlier.host.is_some() && earlier.host != later.host) {
        return false;
    }
    let under = |path: &str, prefix: &str| {
        prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/"))
    };
    match (&earlier.path, &later.path) {
        (PathMatch::Any, _) => true,
        (PathMatch::Prefix(p), PathMatch::Any) => p.is_empty(),
        (PathMatch::Prefix(p), PathMatch::Prefix(q)) => under(q, p),
        (PathMatch::Prefix(p), PathMatch::Glob(g)) => {
            // Every path the glob matches starts with its segments before the first `*`.
            let fixed: Vec<&str> = g.split('/').take_while(|s| !s.contains('*')).collect();
            let fixed = fixed.join("/");
            p.is_empty() || (!fixed.is_empty() && under(&fixed, p))
        }
        (PathMatch::Glob(a), PathMatch::Glob(b)) => a == b,
        (PathMatch::Glob(_), _) => false,
    }
}

fn keys(k: &RawKeys, p: &mut Problems) -> KeyCacheConfig {
    let keys = KeyCacheConfig {
        min_ttl: p.duration("keys.min_ttl", k.min_ttl.as_ref(), DEFAULT_MIN_TTL),
        max_ttl: p.duration("keys.max_ttl", k.max_ttl.as_ref(), DEFAULT_MAX_TTL),
        default_ttl: p.duration("keys.default_ttl", k.default_ttl.as_ref(), DEFAULT_TTL),
        unknown_kid_cooldown: p.duration(
            "keys.unknown_kid_cooldown",
            k.unknown_kid_cooldown.as_ref(),
            DEFAULT_UNKNOWN_KID_COOLDOWN,
        ),
        max_stale: p.duration("keys.max_stale", k.max_stale.as_ref(), DEFAULT_MAX_STALE),
        connect_timeout: p.duration(
            "keys.connect_timeout",
            k.connect_timeout.as_ref(),
            DEFAULT_CONNECT_TIMEOUT,
        ),
        fetch_timeout: p.duration(
            "keys.fetch_timeout",
            k.fetch_timeout.as_ref(),
            DEFAULT_FETCH_TIMEOUT,
        ),
        max_body_bytes: p.positive(
            "keys.max_body_bytes",
            k.max_body_bytes,
            DEFAULT_MAX_BODY_BYTES,
        ),
        max_keys: p.positive("keys.max_keys", k.max_keys, DEFAULT_MAX_KEYS),
        retry_initial: p.duration(
            "keys.retry_initial",
            k.retry_initial.as_ref(),
            DEFAULT_RETRY_INITIAL,
        ),
        retry_max: p.duration("keys.retry_max", k.retry_max.as_ref(), DEFAULT_RETRY_MAX),
    };
    if keys.min_ttl > keys.max_ttl {
        p.add("keys.min_ttl", "must not exceed keys.max_ttl");
    }
    if keys.min_ttl.is_zero() {
        p.add("keys.min_ttl", "must be greater than 0");
    }
    if keys.fetch_timeout.is_zero() || keys.connect_timeout.is_zero() {
        p.add("keys.fetch_timeout", "timeouts must be greater than 0");
    }
    if keys.retry_initial.is_zero() || keys.retry_initial > keys.retry_max {
        p.add(
            "keys.retry_initial",
            "must be greater than 0 and at most keys.retry_max",
        );
    }
    keys
}

fn verified_cache(raw: &RawVerifiedCache, p: &mut Problems) -> VerifiedCacheConfig {
    let verified_cache = VerifiedCacheConfig {
        capacity: raw.capacity.unwrap_or(DEFAULT_VERIFIED_CACHE_CAPACITY),
        max_bytes: raw.max_bytes.unwrap_or(DEFAULT_VERIFIED_CACHE_MAX_BYTES),
        max_token_bytes: p.positive(
            "verified_cache.max_token_bytes",
            raw.max_token_bytes,
            DEFAULT_VERIFIED_CACHE_MAX_TOKEN_BYTES,
        ),
        ttl: p.duration(
            "verified_cache.ttl",
            raw.ttl.as_ref(),
            DEFAULT_VERIFIED_CACHE_TTL,
        ),
        recent_slots: raw
            .recent_slots
            .unwrap_or(DEFAULT_VERIFIED_CACHE_RECENT_SLOTS),
    };
    if verified_cache.ttl.is_zero() {
        p.add("verified_cache.ttl", "must be greater than 0");
    }
    if verified_cache.recent_slots > MAX_VERIFIED_CACHE_RECENT_SLOTS {
        p.add(
            "verified_cache.recent_slots",
            format!("must be at most {MAX_VERIFIED_CACHE_RECENT_SLOTS}"),
        );
    }
    verified_cache
}

fn password_grant(raw: &RawPasswordGrant, p: &mut Problems) -> PasswordGrantConfig {
    let params: Vec<(String, String)> =
        raw.params.clone().unwrap_or_default().into_iter().collect();
    for (name, _) in &params {
        // These carry the grant and the client's authentication; the config cannot set them.
        const RESERVED: [&str; 7] = [
            "grant_type",
            "username",
            "password",
            "client_id",
            "client_secret",
            "client_assertion",
            "client_assertion_type",
        ];
        if RESERVED.contains(&name.as_str()) {
            p.add(
                format!("password_grant.params.{name}"),
                "is set by authgate itself",
            );
        }
    }
    PasswordGrantConfig {
        cache_capacity: p.positive(
            "password_grant.cache_capacity",
            raw.cache_capacity,
            DEFAULT_PASSWORD_GRANT_CACHE_CAPACITY,
        ),
        refresh_before: p.duration(
            "password_grant.refresh_before",
            raw.refresh_before.as_ref(),
            DEFAULT_PASSWORD_GRANT_REFRESH_BEFORE,
        ),
        negative_ttl: p.duration(
            "password_grant.negative_ttl",
            raw.negative_ttl.as_ref(),
            DEFAULT_PASSWORD_GRANT_NEGATIVE_TTL,
        ),
        max_exchanges_per_minute: p.positive(
            "password_grant.max_exchanges_per_minute",
            raw.max_exchanges_per_minute,
            DEFAULT_PASSWORD_GRANT_MAX_PER_MINUTE,
        ),
        params,
    }
}

fn limits(raw: &RawLimits, p: &mut Problems) -> Limits {
    let limits = Limits {
        check_deadline: p.duration(
            "limits.check_deadline",
            raw.check_deadline.as_ref(),
            DEFAULT_CHECK_DEADLINE,
        ),
        max_concurrent_checks: p.positive(
            "limits.max_concurrent_checks",
            raw.max_concurrent_checks,
            DEFAULT_MAX_CONCURRENT_CHECKS,
        ),
        max_header_bytes: p.positive(
            "limits.max_header_bytes",
            raw.max_header_bytes,
            DEFAULT_MAX_HEADER_BYTES,
        ),
        header_read_timeout: p.duration(
            "limits.header_read_timeout",
            raw.header_read_timeout.as_ref(),
            DEFAULT_HEADER_READ_TIMEOUT,
        ),
        max_connections: p.positive(
            "limits.max_connections",
            raw.max_connections,
            DEFAULT_MAX_CONNECTIONS,
        ),
    };
    if limits.header_read_timeout.is_zero() {
        p.add("limits.header_read_timeout", "must be greater than 0");
    }
    if limits.check_deadline.is_zero() {
        p.add("limits.check_deadline", "must be greater than 0");
    }
    if limits.max_header_bytes < 8192 {
        p.add("limits.max_header_bytes", "must be at least 8192");
    }
    limits
}

fn shutdown(raw: &RawShutdown, p: &mut Problems) -> ShutdownConfig {
    ShutdownConfig {
        grace: p.duration("shutdown.grace", raw.grace.as_ref(), DEFAULT_SHUTDOWN_GRACE),
        drain_timeout: p.duration(
            "shutdown.drain_timeout",
            raw.drain_timeout.as_ref(),
            DEFAULT_DRAIN_TIMEOUT,
        ),
    }
}

fn http(raw: &RawHttp, p: &mut Problems) -> HttpConfig {
    let envoy_prefix = raw
        .envoy_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_ENVOY_PREFIX.to_owned());
    let envoy_prefix = envoy_prefix.trim_end_matches('/').to_owned();
    if !envoy_prefix.starts_with('/')
        || envoy_prefix == "/auth"
        || envoy_prefix.starts_with("/auth/")
    {
        p.add(
            "http.envoy_prefix",
            "must start with / and not overlap /auth",
        );
    } else if envoy_prefix.contains("//")
        || !envoy_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
    {
        // Route syntax (`{x}`, `{*x}`) or odd bytes would change what the router matches.
        p.add(
            "http.envoy_prefix",
            "may hold only letters, digits, - . _ ~ and single / between segments",
        );
    }
    let realm = raw
        .realm
        .clone()
        .unwrap_or_else(|| DEFAULT_REALM.to_owned());
    if realm.is_empty()
        || !realm
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        p.add(
            "http.realm",
            "must be printable ASCII without quotes or backslashes",
        );
    }
    HttpConfig {
        envoy_prefix,
        realm,
    }
}

fn trusted_proxies(raw: &RawConfig, p: &mut Problems) -> Option<Vec<ipnet::IpNet>> {
    raw.trusted_proxies.as_ref().map(|list| {
            if list.is_empty() {
                p.add(
                    "trusted_proxies",
                    "must list at least one network; leave it out to trust every peer",
                );
            }
            list.iter()
                .enumerate()
                .filter_map(|(i, text)| {
                    parse_network(text.trim())
                        .map_err(|()| {
                            p.add(
                                format!("trusted_proxies[{i}]"),
                                format!("invalid network {text:?}; use an address or CIDR such as 10.0.0.0/8 or ::1"),
                            );
                        })
                        .ok()
                })
                .collect::<Vec<_>>()
        })
}

/// Collects problems while validating.
#[derive(Debug, Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            problem: problem.into(),
        });
    }

    fn duration(&mut self, field: &str, value: Option<&String>, default: Duration) -> Duration {
        let Some(text) = value else { return default };
        match humantime::parse_duration(text.trim()) {
            // Far beyond any sensible setting, and far from the overflow of `Instant + d` or of
            // the seconds arithmetic of the verified-token cache.
            Ok(d) if d > MAX_DURATION => {
                self.add(field, "must be at most 365d");
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.add(
                    field,
                    format!("invalid duration {text:?} ({e}); use a form like 30s, 10m or 150ms"),
                );
                default
            }
        }
    }

    fn addr(&mut self, field: &str, value: Option<&String>, default: &str) -> SocketAddr {
        let text = value.map(String::as_str).unwrap_or(default);
        text.parse().unwrap_or_else(|_| {
            self.add(
                field,
                format!("invalid listen address {text:?}; use IP:PORT such as 0.0.0.0:8080"),
            );
            SocketAddr::from(([0, 0, 0, 0], 0))
        })
    }

    fn positive(&mut self, field: &str, value: Option<usize>, default: usize) -> usize {
        match value {
            Some(0) => {
                self.add(field, "must be greater than 0");
                default
            }
            // Counts and sizes beyond this are typos; tokio's semaphores also refuse more
            // than usize::MAX >> 3 permits.
            Some(v) if v > MAX_COUNT => {
                self.add(field, format!("must be at most {MAX_COUNT}"));
                default
            }
            Some(v) => v,
            None => default,
        }
    }

    fn algorithms(&mut self, field: &str, names: &[String]) -> Vec<Alg> {
        if names.is_empty() {
            self.add(field, "must name at least one algorithm");
        }
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match name.parse::<Alg>() {
                Ok(alg) if !out.contains(&alg) => out.push(alg),
                Ok(_) => {}
                Err(e) => self.add(format!("{field}[{i}]"), e.to_string()),
            }
        }
        out
    }

    fn requirement(&mut self, field: &str, raw: &RawRequirement) -> Requirement {
        let mut claims = Vec::new();
        for (i, c) in raw.claims.iter().enumerate() {
            let f = format!("{field}.claims[{i}]");
            let Some(path) = c.claim.as_deref() else {
                self.add(format!("{f}.claim"), "is required");
                continue;
            };
            let path = match ClaimPath::parse(path) {
                Ok(p) => p,
                Err(e) => {
                    self.add(format!("{f}.claim"), e);
                    continue;
                }
            };
            let matcher = match (&c.equals, &c.one_of, &c.email_domain) {
                (Some(v), None, None) => ClaimMatch::OneOf(vec![v.clone()]),
                (None, Some(vs), None) if !vs.is_empty() => ClaimMatch::OneOf(vs.clone()),
                (None, Some(_), None) => {
                    self.add(format!("{f}.one_of"), "must not be empty");
                    continue;
                }
                (None, None, Some(domains)) => {
                    let bad = domains
                        .iter()
                        .position(|d| d.is_empty() || d.contains(['@', ' ']));
                    if domains.is_empty() || bad.is_some() {
                        let at = bad.map_or_else(String::new, |i| format!("[{i}]"));
                        self.add(
                            format!("{f}.email_domain{at}"),
                            "must list domains (non-empty, without @ or spaces)",
                        );
                        continue;
                    }
                    ClaimMatch::EmailDomain(
                        domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
                    )
                }
                (None, None, None) => {
                    self.add(f, "needs equals, one_of or email_domain");
                    continue;
                }
                _ => {
                    self.add(f, "give one of equals, one_of and email_domain");
                    continue;
                }
            };
            claims.push(ClaimRequirement { path, matcher });
        }
        for (i, s) in raw.scopes.iter().enumerate() {
            if s.is_empty() || s.contains(char::is_whitespace) {
                self.add(
                    format!("{field}.scopes[{i}]"),
                    "a scope is one non-empty word",
                );
            }
        }
        Requirement {
            issuers: raw.issuers.clone(),
            audiences: raw.audiences.clone(),
            scopes: raw.scopes.clone(),
            claims,
        }
    }
}

fn is_loopback_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks a URL's scheme and shape; `allow_http` admits plain http.
fn check_url(problems: &mut Problems, field: &str, url: &str, allow_http: bool) {
    let ok_scheme = url.starts_with("https://")
        || (url.starts_with("http://") && (allow_http || is_loopback_url(url)));
    if !ok_scheme {
        problems.add(
            field,
            format!("{url:?} must be an https:// URL (http:// only for loopback or with allow_http: true)"),
        );
        return;
    }
    if reqwest::Url::parse(url).is_err() || url.contains(['#', ' ']) {
        problems.add(field, format!("{url:?} is not a valid URL"));
    }
}

/// Whether plain http is allowed for an issuer's URLs.
pub fn http_allowed(issuer: &IssuerConfig, url: &str) -> bool {
    issuer.allow_http || is_loopback_url(url)
}

fn header_name(problems: &mut Problems, field: &str, name: &str) -> Option<http::HeaderName> {
    match http::HeaderName::from_bytes(name.as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            problems.add(field, format!("{name:?} is not a valid header name"));
            None
        }
    }
}

/// A network in CIDR form, or one address (a /32 or /128).
fn parse_network(text: &str) -> Result<ipnet::IpNet, ()> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| ())
}

/// Headers a claim may never be written to: they would change how the request is routed or
/// authenticated rather than describe the caller.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "cookie",
    "te",
    "upgrade",
    "www-authenticate",
    "forwarded",
    "x-real-ip",
];

/// Prefixes of header families a claim may never be written to: the proxies' own descriptions
/// of the request (`X-Forwarded-For`, `X-Original-URI`) and Envoy's instructions
/// (`x-envoy-auth-headers-to-remove`).
const RESERVED_PREFIXES: &[&str] = &["x-forwarded-", "x-original-", "x-envoy-"];

/// Whether a claim header may not be named `name` (lower-case), in any spelling that an
/// upstream folding `_` or `.` into `-` would read as a reserved one.
fn reserved_header(name: &str) -> bool {
    let folded = name.replace(['_', '.'], "-");
    RESERVED_HEADERS.contains(&folded.as_str())
        || RESERVED_PREFIXES.iter().any(|p| folded.starts_with(p))
}

fn check_requirement_issuers(
    p: &mut Problems,
    field: &str,
    req: &Requirement,
    issuers: &[IssuerConfig],
) {
    for (i, name) in req.issuers.iter().flatten().enumerate() {
        if !issuers.iter().any(|c| &c.issuer == name) {
            p.add(
                format!("{field}.issuers[{i}]"),
                format!("{name:?} is not a configured issuer"),
            );
        }
    }
}
