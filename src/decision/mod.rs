//! THE CORE: one `CheckRequest` in, one `Decision` out. Every mouth (forward-auth HTTP, Envoy
//! HTTP, ext_authz gRPC, TokenService) translates into the core's input and maps the `Decision`
//! back through `deny.rs`; only this module decides. No axum, tonic or reqwest in here.
//! `decide()` cannot fail: a denial is a value with a `DenyReason`, and each reason maps once to
//! a `DenyKind`.
//!
//! - [`model`]: the request and decision types.
//! - [`routes`]: which route rule a request falls under.
//! - [`clock`]: injectable wall-clock time.
//!
//! Here: the pipeline (trust, routes, token, cheap claim checks, keys, signature, scopes and
//! claims, headers), the concurrency limit, the per-check deadline and panic-to-deny.

mod clock;
mod model;
mod routes;

pub use clock::{Clock, FixedClock, SystemClock};
pub use model::{Allow, CheckRequest, Decision, Deny, DenyKind, DenyReason, Frontend, Identity};
pub(crate) use routes::canonical_path;

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt as _;
use http::HeaderName;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::claims::{claim_headers, granted_scopes};
use crate::config::{AudienceMatch, Config, IssuerConfig, Requirement, RouteAction};
use crate::keys::{KeyHealth, KeyLookup, KeySource, VerifyingKey};
use crate::telemetry;
use crate::token::{FoundToken, TokenSource, find_token};
use crate::verify::{FormatError, Jws, numeric_date, parse_compact, signature_valid};
use routes::RouteTable;

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
    routes: RouteTable,
    limiter: Semaphore,
    clock: Arc<dyn Clock>,
    owned_headers: Arc<[HeaderName]>,
    verified: Option<VerifiedCache>,
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
        Self {
            routes: RouteTable::new(&config.routes),
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

    /// Decides one check a proxy asked about. What a peer outside `trusted_proxies` says about
    /// the original request (method, host, path, client address) is forgotten first, so route
    /// rules that need it deny the check as malformed.
    pub async fn decide(&self, req: &CheckRequest) -> Decision {
        let req = if self.config.trusts_peer(req.proxy) {
            Cow::Borrowed(req)
        } else {
            Cow::Owned(req.without_forwarded_attributes())
        };
        let decision = self.bounded(req.frontend, self.decide_request(&req)).await;
        if let Decision::Deny(d) = &decision {
            tracing::debug!(
                frontend = req.frontend.as_str(),
                reason = d.reason.as_str(),
                method = req.method.as_deref().unwrap_or("-"),
                host = req.host.as_deref().unwrap_or("-"),
                // Never the query: it may carry a token.
                path = req.path.as_deref().map(|p| p.split('?').next().unwrap_or("")).unwrap_or("-"),
                proxy = ?req.proxy,
                client = ?req.client,
                "check denied"
            );
        }
        decision
    }

    /// Verifies a token handed over as it is, by a caller that is not a proxy
    /// (`TokenService/Verify`): no token source and no route rule applies (the token is always
    /// verified); `requirement` takes a route's place.
    pub async fn verify_token(&self, token: &str, requirement: &Requirement) -> Decision {
        let check = async {
            if token.is_empty() {
                return Decision::Deny(Deny::new(DenyReason::EmptyToken));
            }
            let found = FoundToken {
                token: Cow::Borrowed(token),
                source: TokenSource::Caller,
            };
            self.verify(found, Some(requirement), &[]).await.into()
        };
        let decision = self.bounded(Frontend::TokenService, check).await;
        if let Decision::Deny(d) = &decision {
            tracing::debug!(
                frontend = Frontend::TokenService.as_str(),
                reason = d.reason.as_str(),
                "token denied"
            );
        }
        decision
    }

    /// Runs one check within the limits every check shares: the concurrency limit (shed, not
    /// queued), panic-to-deny, and the decision metrics.
    async fn bounded(&self, frontend: Frontend, check: impl Future<Output = Decision>) -> Decision {
        let started = Instant::now();
        let decision = match self.limiter.try_acquire() {
            // A panic in the decision path is a bug; it must still end as a counted deny, never
            // as a dropped connection (which Envoy's failure_mode_allow would turn into an allow).
            Ok(_permit) => AssertUnwindSafe(check)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!(
                        frontend = frontend.as_str(),
                        "the decision panicked; denied as internal_error"
                    );
                    Decision::Deny(Deny::new(DenyReason::InternalError))
                }),
            Err(_) => {
                telemetry::record_shed(frontend);
                Decision::Deny(Deny::new(DenyReason::Overloaded))
            }
        };
        telemetry::record_decision(frontend, &decision, started.elapsed());
        decision
    }

    async fn decide_request(&self, req: &CheckRequest) -> Decision {
        if req.malformed {
            return Decision::Deny(Deny::new(DenyReason::MalformedCheck));
        }
        let route_req = match self.routes.select(req) {
            Err(reason) => return Decision::Deny(Deny::new(reason)),
            Ok(None) => None,
            Ok(Some(RouteAction::Require(r))) => Some(r),
            Ok(Some(RouteAction::Deny)) => {
                return Decision::Deny(Deny::new(DenyReason::RouteDenied));
            }
            Ok(Some(RouteAction::Anonymous)) => {
                return Decision::Allow(Allow {
                    headers: Vec::new(),
                    owned_headers: Arc::clone(&self.owned_headers),
                    headers_to_remove: self.headers_to_remove(&[], None, &req.header_names),
                    query_parameters_to_remove: Vec::new(),
                    identity: None,
                    token_source: None,
                });
            }
        };
        let found = match find_token(req, &self.config.token) {
            Ok(Some(found)) => found,
            Ok(None) => return Decision::Deny(Deny::new(DenyReason::MissingToken)),
            Err(reason) => return Decision::Deny(Deny::new(reason)),
        };
        self.verify(found, route_req, &req.header_names)
            .await
            .into()
    }

    /// Verifies a found token against the issuer, the top-level requirement and the route's.
    async fn verify(
        &self,
        found: FoundToken<'_>,
        route_req: Option<&Requirement>,
        header_names: &[String],
    ) -> Result<Allow, Deny> {
        let started = Instant::now();
        let cfg = &self.config;
        if found.token.len() > cfg.token.max_bytes {
            return Err(DenyReason::TokenTooLarge.into());
        }
        let jws = parse_compact(&found.token).map_err(|e| match e {
            FormatError::Alg => DenyReason::AlgorithmNotAllowed,
            FormatError::Crit => DenyReason::UnsupportedCritical,
            _ => DenyReason::MalformedToken,
        })?;
        let claims = &jws.claims;

        // Cheap rejections first: issuer, algorithm, type, times, audience, claim types. No key
        // is touched.
        let iss = match claims.get("iss") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(DenyReason::MalformedClaims.into()),
            None => return Err(DenyReason::UnknownIssuer.into()),
        };
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or(DenyReason::UnknownIssuer)?;
        let requirements = [Some(&cfg.require), route_req];
        for r in requirements.iter().flatten() {
            if let Some(allowed) = &r.issuers
                && !allowed.iter().any(|a| a == iss)
            {
                return Err(DenyReason::IssuerNotAllowed.into());
            }
        }
        if !issuer.config.algorithms.contains(&jws.header.alg) {
            return Err(DenyReason::AlgorithmNotAllowed.into());
        }
        if let Some(accepted) = &cfg.verify.required_typ
            && !typ_accepted(jws.header.typ.as_deref(), accepted)
        {
            return Err(DenyReason::WrongTokenType.into());
        }
        let expires_at = self.check_times(claims)?;
        let audiences = route_req
            .and_then(|r| r.audiences.as_ref())
            .or(cfg.require.audiences.as_ref())
            .unwrap_or(&issuer.config.audiences);
        check_audience(claims, audiences, cfg.verify.audience_match)?;
        let granted = granted_scopes(claims).map_err(|_| DenyReason::MalformedClaims)?;

        // Keys, bounded by what is left of the deadline.
        let remaining = cfg.limits.check_deadline.saturating_sub(started.elapsed());
        let lookup = issuer
            .keys
            .lookup(jws.header.kid.as_deref(), jws.header.alg);
        let keys = match tokio::time::timeout(remaining, lookup).await {
            Err(_) => return Err(DenyReason::DeadlineExceeded.into()),
            Ok(KeyLookup::Found(keys)) => keys,
            Ok(KeyLookup::UnknownKid) => return Err(DenyReason::UnknownKey.into()),
            Ok(KeyLookup::AmbiguousKid) => return Err(DenyReason::AmbiguousKey.into()),
            Ok(KeyLookup::AlgorithmMismatch) => {
                return Err(DenyReason::KeyAlgorithmMismatch.into());
            }
            Ok(KeyLookup::Unavailable) => return Err(DenyReason::KeysUnavailable.into()),
        };
        self.check_signature(&found.token, &jws, &keys)?;

        // Authorization on a verified token.
        for r in requirements.iter().flatten() {
            if r.scopes.iter().any(|s| !granted.contains(&s.as_str())) {
                return Err(Deny {
                    scope: Some(r.scopes.join(" ")),
                    ..Deny::new(DenyReason::InsufficientScope)
                });
            }
            if !r.claims.iter().all(|c| c.satisfied_by(claims)) {
                return Err(DenyReason::ClaimMismatch.into());
            }
        }

        let (headers, rejected) = claim_headers(claims, &cfg.claim_headers);
        telemetry::record_claim_headers_rejected(rejected);
        let identity = Identity {
            subject: claims.get("sub").and_then(Value::as_str).map(str::to_owned),
            issuer: iss.to_owned(),
            scopes: granted.iter().map(|s| (*s).to_owned()).collect(),
            expires_at,
            claims: Map::new(),
        };
        let query_parameters_to_remove = match (&cfg.token.query, found.source) {
            (Some(name), TokenSource::Query) if cfg.token.strip_upstream => vec![name.clone()],
            _ => Vec::new(),
        };
        Ok(Allow {
            headers_to_remove: self.headers_to_remove(&headers, Some(found.source), header_names),
            headers,
            owned_headers: Arc::clone(&self.owned_headers),
            query_parameters_to_remove,
            identity: Some(Identity {
                claims: jws.claims,
                ..identity
            }),
            token_source: Some(found.source),
        })
    }

    /// Request headers that must not reach the upstream with an allow that sets `headers`:
    /// every owned header without a value (a client-sent one would pose as identity); the
    /// all-underscore and all-dot spellings of every owned header (upstreams that fold `_` or
    /// `.` into `-`, as CGI-style servers do, would read them as the owned one) and every other
    /// spelling of one among the request's `header_names`; and with `strip_upstream` the
    /// `authorization` header that carried the token.
    fn headers_to_remove(
        &self,
        headers: &[(HeaderName, http::HeaderValue)],
        source: Option<TokenSource>,
        header_names: &[String],
    ) -> Vec<String> {
        let mut remove: Vec<String> = Vec::new();
        let mut add = |name: String| {
            if !remove.contains(&name) {
                remove.push(name);
            }
        };
        for owned in self.owned_headers.iter() {
            let owned = owned.as_str();
            if !headers.iter().any(|(name, _)| name == owned) {
                add(owned.to_owned());
            }
            for separator in ['_', '.'] {
                let spelling = owned.replace('-', &separator.to_string());
                if spelling != owned {
                    add(spelling);
                }
            }
        }
        for name in header_names {
            let lower = name.to_ascii_lowercase();
            let folded = lower.replace(['_', '.'], "-");
            if folded != lower && self.owned_headers.iter().any(|o| o.as_str() == folded) {
                add(lower);
            }
        }
        if self.config.token.strip_upstream && source == Some(TokenSource::Header) {
            add("authorization".to_owned());
        }
        remove
    }

    /// Verifies the signature with one of `keys`, or finds that the same token was verified
    /// before by one of these very key objects.
    fn check_signature(
        &self,
        token: &str,
        jws: &Jws<'_>,
        keys: &[Arc<VerifyingKey>],
    ) -> Result<(), Deny> {
        let Some(cache) = &self.verified else {
            return match keys.iter().any(|k| signature_valid(jws, k)) {
                true => Ok(()),
                false => Err(DenyReason::BadSignature.into()),
            };
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if cache
            .get(&digest)
            .is_some_and(|known| keys.iter().any(|k| Arc::ptr_eq(k, &known)))
        {
            telemetry::record_verified_cache(true);
            return Ok(());
        }
        telemetry::record_verified_cache(false);
        let key = keys
            .iter()
            .find(|k| signature_valid(jws, k))
            .ok_or(DenyReason::BadSignature)?;
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
        let exp = date("exp")?.ok_or(DenyReason::MissingExpiry)?;
        if now >= exp.saturating_add(leeway) {
            return Err(DenyReason::Expired.into());
        }
        if let Some(nbf) = date("nbf")?
            && now.saturating_add(leeway) < nbf
        {
            return Err(DenyReason::NotYetValid.into());
        }
        if let Some(iat) = date("iat")?
            && iat > now.saturating_add(leeway)
        {
            return Err(DenyReason::IssuedInFuture.into());
        }
        Ok(exp)
    }
}

impl From<Result<Allow, Deny>> for Decision {
    fn from(result: Result<Allow, Deny>) -> Self {
        match result {
            Ok(allow) => Decision::Allow(allow),
            Err(deny) => Decision::Deny(deny),
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
                    None => return Err(DenyReason::MalformedClaims.into()),
                }
            }
            auds
        }
        Some(_) => return Err(DenyReason::MalformedClaims.into()),
        None => return Err(DenyReason::WrongAudience.into()),
    };
    let has = |a: &String| token_auds.contains(&a.as_str());
    let ok = match mode {
        AudienceMatch::Any => audiences.iter().any(has),
        AudienceMatch::All => !audiences.is_empty() && audiences.iter().all(has),
    };
    if ok {
        Ok(())
    } else {
        Err(DenyReason::WrongAudience.into())
    }
}

#[cfg(test)]
mod tests;
