//! THE CORE: one `CheckRequest` in, one `Decision` out. Every mouth (forward-auth HTTP, Envoy
//! HTTP, ext_authz gRPC, TokenService) translates into the core's input and maps the `Decision`
//! back through `deny.rs`; only this module decides. No axum, tonic or reqwest in here.
//! `decide()` cannot fail: a denial is a value with a `DenyReason`, and each reason maps once to
//! a `DenyKind`.
//!
//! - [`model`]: the request and decision types.
//! - [`routes`]: which route rule a request falls under.
//! - [`clock`]: injectable wall-clock time.
//! - [`cache`]: the verified-token cache a repeated token is answered from.
//!
//! Here: the pipeline (trust, routes, token, then either the cache or the first check: cheap
//! claim checks, keys, signature; then scopes and claims, headers), the concurrency limit, the
//! per-check deadline and panic-to-deny.

mod cache;
mod clock;
mod model;
mod routes;

pub use clock::{Clock, FixedClock, SystemClock};
pub use model::{
    Allow, CheckRequest, Decision, Deny, DenyKind, DenyReason, Frontend, Identity, Removals,
    could_pose_as_owned,
};
pub(crate) use routes::canonical_path;

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::FutureExt as _;
use http::HeaderName;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::cert::ClientCert;
use crate::claims::{
    ClaimPath, ClaimRequirement, claim_header_values, granted_scopes, header_value, match_texts,
};
use crate::config::{
    AudienceMatch, Config, DpopMode, IssuerConfig, PopMtls, Requirement, RouteAction, TokenConfig,
    VerifyConfig,
};
use crate::deny::Challenges;
use crate::dpop::{ProofChecker, ProofError, ProofTarget};
use crate::exchange::{ExchangeError, PasswordGrant};
use crate::introspect::{Introspected, Introspector};
use crate::keys::{KeyHealth, KeyLookup, KeySource};
use crate::telemetry;
use crate::token::{FoundToken, TokenSource, basic_credentials, cookies_without, find_token};
use crate::verify::{FormatError, numeric_date, parse_compact, signature_valid};
use cache::{TextsBuilder, Times, VerifiedCache, VerifiedToken};
use routes::RouteTable;

/// A trusted issuer and its keys.
#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    /// Its configuration.
    pub config: IssuerConfig,
    /// Where its keys come from.
    pub keys: Arc<dyn KeySource>,
}

/// Makes decisions. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Decider {
    config: Arc<Config>,
    issuers: Vec<TrustedIssuer>,
    /// Each issuer's name, shared with the identities of its tokens.
    issuer_names: Vec<Arc<str>>,
    routes: RouteTable,
    limiter: ConcurrencyLimit,
    clock: Arc<dyn Clock>,
    owned_headers: Arc<[HeaderName]>,
    /// The all-underscore and all-dot spellings of every owned header, worked out once.
    owned_spellings: Arc<[String]>,
    /// Every claim path a claim rule looks at, with whether it compares string claims only,
    /// once: a verified token keeps the texts found at each, in this order.
    claim_paths: Vec<(ClaimPath, bool)>,
    verified: Option<VerifiedCache>,
    /// The issuer that exchanges Basic credentials, and its grant.
    password: Option<(usize, PasswordGrant)>,
    /// The headers token sources read besides `Authorization`, worked out once.
    token_source_headers: Vec<HeaderName>,
    /// DPoP proofs and their replay cache, where an issuer accepts DPoP.
    dpop: Option<Arc<ProofChecker>>,
    /// Each issuer's introspection, where it is on (same order as `issuers`).
    introspectors: Vec<Option<Introspector>>,
    /// What the challenges of 401 answers say.
    challenges: Challenges,
}

impl Decider {
    /// A decider over these issuers, in config order.
    pub fn new(config: Arc<Config>, issuers: Vec<TrustedIssuer>, clock: Arc<dyn Clock>) -> Self {
        // Every header any claim header mapping sets (top level, issuers, routes), and the
        // payload header, once.
        let mut owned: Vec<HeaderName> = Vec::new();
        let names = config.claim_headers.headers.iter().map(|(_, name)| name);
        for name in names.chain(config.claim_headers.payload_header.as_ref()) {
            if !owned.contains(name) {
                owned.push(name.clone());
            }
        }
        let owned_headers: Arc<[HeaderName]> = owned.into();
        let mut owned_spellings: Vec<String> = Vec::new();
        for owned in owned_headers.iter().map(HeaderName::as_str) {
            for separator in ["_", "."] {
                let spelling = owned.replace('-', separator);
                if spelling != owned && !owned_spellings.contains(&spelling) {
                    owned_spellings.push(spelling);
                }
            }
        }
        let mut claim_paths: Vec<(ClaimPath, bool)> = Vec::new();
        let route_requirements = config.routes.iter().filter_map(|r| match &r.action {
            RouteAction::Require(req) => Some(req),
            _ => None,
        });
        for rule in std::iter::once(&config.require)
            .chain(route_requirements)
            .flat_map(|r| &r.claims)
        {
            let slot = (rule.path.clone(), rule.matcher.strings_only());
            if !claim_paths.contains(&slot) {
                claim_paths.push(slot);
            }
        }
        let password = config.password_issuer().and_then(|i| {
            let issuer = config.issuers.get(i)?.clone();
            let grant =
                PasswordGrant::new(issuer, config.password_grant.clone(), config.keys.clone());
            Some((i, grant))
        });
        Self {
            dpop: config
                .dpop_accepted()
                .then(|| Arc::new(ProofChecker::new(&config.dpop_proofs))),
            introspectors: issuers
                .iter()
                .map(|i| Introspector::new(&i.config, &config.keys))
                .collect(),
            challenges: Challenges::new(&config),
            token_source_headers: config.token_source_headers(),
            password,
            routes: RouteTable::new(&config.routes),
            verified: VerifiedCache::new(&config.verified_cache),
            limiter: ConcurrencyLimit::new(config.limits.max_concurrent_checks),
            issuer_names: issuers
                .iter()
                .map(|i| Arc::from(i.config.issuer.as_str()))
                .collect(),
            config,
            issuers,
            clock,
            owned_headers,
            owned_spellings: owned_spellings.into(),
            claim_paths,
        }
    }

    /// The request headers whose values the mouths pass in `CheckRequest::token_headers`.
    pub fn token_source_headers(&self) -> &[HeaderName] {
        &self.token_source_headers
    }

    /// Takes over `previous`'s DPoP replay cache (on reload), where both check proofs with the
    /// same settings: a proof used before the reload must not pass after it.
    pub fn keep_dpop_replays(&mut self, previous: &Decider) {
        if let (Some(mine), Some(theirs)) = (&mut self.dpop, &previous.dpop)
            && mine.config() == theirs.config()
        {
            *mine = Arc::clone(theirs);
        }
    }

    /// What the challenges of this config's 401 answers say.
    pub fn challenges(&self) -> &Challenges {
        &self.challenges
    }

    /// The configuration this decider runs on.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every header authgate owns.
    pub fn owned_headers(&self) -> &Arc<[HeaderName]> {
        &self.owned_headers
    }

    /// Tokens in the verified-token cache and its bytes (`None` when it is off).
    pub fn verified_cache_size(&self) -> Option<(usize, u64)> {
        self.verified.as_ref().map(VerifiedCache::size)
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
        let mut decision = self.bounded(req.frontend, self.decide_request(&req)).await;
        if let Decision::Deny(d) = &mut decision {
            // Where Basic credentials are exchanged, a 401 says so.
            d.basic_challenge = self.password.is_some();
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
    /// verified); `requirement` takes a route's place; `client_cert` is the certificate the
    /// caller's client presented, for certificate-bound tokens.
    pub async fn verify_token(
        &self,
        token: &str,
        requirement: &Requirement,
        client_cert: Option<ClientCert>,
    ) -> Decision {
        let check = async {
            if token.is_empty() {
                return Decision::Deny(Deny::new(DenyReason::EmptyToken));
            }
            let found = FoundToken {
                token: Cow::Borrowed(token),
                source: TokenSource::Caller,
            };
            let req = CheckRequest {
                client_cert,
                ..CheckRequest::new(Frontend::TokenService)
            };
            self.verify(found, Some(requirement), &req, &self.config.token, None)
                .await
                .into()
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
        let decision = match self.limiter.enter() {
            // A panic in the decision path is a bug; it must still end as a counted deny, never
            // as a dropped connection (which Envoy's failure_mode_allow would turn into an allow).
            Some(_running) => AssertUnwindSafe(check)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!(
                        frontend = frontend.as_str(),
                        "the decision panicked; denied as internal_error"
                    );
                    Decision::Deny(Deny::new(DenyReason::InternalError))
                }),
            None => {
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
        let route = match self.routes.select(req) {
            Err(reason) => return Decision::Deny(Deny::new(reason)),
            Ok(route) => route,
        };
        // The route's own claim headers, else the issuer's, else the top-level ones (`allow`).
        let route_headers = route.and_then(|r| r.claim_headers);
        // The route's own token sources, else the top-level ones.
        let sources = route
            .and_then(|r| r.token.as_ref())
            .unwrap_or(&self.config.token);
        let route_req = match route.map(|r| &r.action) {
            None => None,
            Some(RouteAction::Require(r)) => Some(r),
            Some(RouteAction::Deny) => {
                return Decision::Deny(Deny::new(DenyReason::RouteDenied));
            }
            Some(RouteAction::Anonymous) => {
                // Rare paths are boxed: the future of every check stays small (it is moved
                // into the connection's task on every request).
                return Box::pin(self.anonymous(req, sources, route_headers)).await;
            }
        };
        let found = match find_token(req, sources, self.dpop.is_some()) {
            Ok(Some(found)) => found,
            Ok(None) => return Box::pin(self.password_check(req, route_req, route_headers)).await,
            Err(reason) => return Decision::Deny(Deny::new(reason)),
        };
        self.verify(found, route_req, req, sources, route_headers)
            .await
            .into()
    }

    /// An anonymous route: allowed whatever the credentials. A valid token (one that meets the
    /// top-level requirement) still sets the claim headers, so the upstream may personalise; an
    /// invalid one is allowed without identity and counted. Basic credentials are not
    /// exchanged here.
    async fn anonymous(
        &self,
        req: &CheckRequest,
        sources: &TokenConfig,
        route_headers: Option<u64>,
    ) -> Decision {
        let anonymous = || {
            Decision::Allow(Allow {
                headers: Vec::new(),
                owned_headers: Arc::clone(&self.owned_headers),
                headers_to_remove: if req.frontend.removes_headers() {
                    self.headers_to_remove(&[], None, req, sources)
                } else {
                    Removals::default()
                },
                query_parameters_to_remove: Vec::new(),
                identity: None,
                token_source: None,
            })
        };
        let found = match find_token(req, sources, self.dpop.is_some()) {
            Ok(Some(found)) => found,
            Ok(None) => return anonymous(),
            Err(reason) => {
                telemetry::record_anonymous_invalid_token(reason);
                return anonymous();
            }
        };
        match self.verify(found, None, req, sources, route_headers).await {
            Ok(allow) => Decision::Allow(allow),
            Err(deny) => {
                telemetry::record_anonymous_invalid_token(deny.reason);
                anonymous()
            }
        }
    }

    /// A request without a token: where an issuer takes the password method and the request
    /// carries HTTP Basic credentials, they are exchanged at its token endpoint and the token
    /// is verified like a bearer token; the allow hands it to the upstream as
    /// `Authorization: Bearer`. Otherwise there is no token.
    async fn password_check(
        &self,
        req: &CheckRequest,
        route_req: Option<&Requirement>,
        route_headers: Option<u64>,
    ) -> Decision {
        let missing = Decision::Deny(Deny::new(DenyReason::MissingToken));
        let Some((_, grant)) = &self.password else {
            return missing;
        };
        let (user, password) = match req.authorization.as_slice() {
            [value] => match basic_credentials(value) {
                Some(Ok(pair)) => pair,
                Some(Err(reason)) => return Decision::Deny(Deny::new(reason)),
                None => return missing,
            },
            [] => return missing,
            _ => return Decision::Deny(Deny::new(DenyReason::MultipleTokens)),
        };
        // The exchange goes on in its own task past the deadline; this check stops waiting.
        let deadline = self.config.limits.check_deadline;
        let exchanged = match tokio::time::timeout(deadline, grant.token(&user, &password)).await {
            Ok(exchanged) => exchanged,
            Err(_) => return Decision::Deny(Deny::new(DenyReason::DeadlineExceeded)),
        };
        let token = match exchanged {
            Ok(token) => token,
            Err(error) => {
                let reason = match error {
                    ExchangeError::Refused => DenyReason::InvalidCredentials,
                    ExchangeError::Unavailable => DenyReason::TokenEndpointUnavailable,
                    ExchangeError::RateLimited => DenyReason::PasswordRateLimited,
                };
                return Decision::Deny(Deny {
                    retry_after: error.retry_after(),
                    ..Deny::new(reason)
                });
            }
        };
        let found = FoundToken {
            token: Cow::Borrowed(&token),
            source: TokenSource::Password,
        };
        match self
            .verify(found, route_req, req, &self.config.token, route_headers)
            .await
        {
            Ok(mut allow) => {
                match http::HeaderValue::from_str(&format!("Bearer {token}")) {
                    Ok(value) => allow.headers.push((http::header::AUTHORIZATION, value)),
                    Err(_) => return Decision::Deny(Deny::new(DenyReason::MalformedToken)),
                }
                Decision::Allow(allow)
            }
            Err(deny) => {
                // A token that does not verify now will not later (or has expired): the next
                // request exchanges anew, within the per-user bound.
                if deny.kind() == DenyKind::InvalidToken {
                    grant.forget(&user, &password);
                }
                Decision::Deny(deny)
            }
        }
    }

    /// RFC 8705 §3: a token bound to a certificate (`cnf.x5t#S256`) needs the request to come
    /// with that certificate, where the issuer checks binding; `strict` also refuses unbound
    /// tokens.
    fn check_binding(
        &self,
        verified: &VerifiedToken,
        client_cert: Option<&ClientCert>,
    ) -> Result<(), Deny> {
        let mode = self
            .issuers
            .get(verified.issuer)
            .map_or(PopMtls::Off, |i| i.config.proof_of_possession_mtls);
        match (mode, verified.x5t()) {
            (PopMtls::Off, _) | (PopMtls::Optional, None) => Ok(()),
            (PopMtls::Strict, None) => Err(DenyReason::UnboundToken.into()),
            (PopMtls::Optional | PopMtls::Strict, Some(x5t)) => {
                if client_cert.is_some_and(|cert| cert.matches(x5t)) {
                    Ok(())
                } else {
                    Err(DenyReason::CertificateMismatch.into())
                }
            }
        }
    }

    /// RFC 9449 §7: a token presented as `Authorization: DPoP` needs a proof of its key for this
    /// request, where the issuer accepts DPoP; a DPoP-bound token (`cnf.jkt`) is never a bearer
    /// token there, and `required` refuses bearer tokens altogether.
    fn check_dpop(
        &self,
        verified: &VerifiedToken,
        found: &FoundToken<'_>,
        req: &CheckRequest,
        now: i64,
    ) -> Result<(), Deny> {
        let mode = self
            .issuers
            .get(verified.issuer)
            .map_or(DpopMode::Off, |i| i.config.dpop);
        let (checker, presented_with_proof) = match (&self.dpop, mode) {
            (Some(checker), DpopMode::Optional | DpopMode::Required) => {
                (checker, found.source == TokenSource::Dpop)
            }
            (_, _) if found.source == TokenSource::Dpop => {
                return Err(DenyReason::DpopUnboundToken.into());
            }
            _ => return Ok(()),
        };
        if !presented_with_proof {
            return match (mode, verified.jkt()) {
                (DpopMode::Optional, None) => Ok(()),
                _ => Err(DenyReason::DpopRequired.into()),
            };
        }
        let Some(jkt) = verified.jkt() else {
            return Err(DenyReason::DpopUnboundToken.into());
        };
        let dpop = http::HeaderName::from_static("dpop");
        let mut proofs = req.token_headers.iter().filter(|(n, _)| *n == dpop);
        let proof = match (proofs.next(), proofs.next()) {
            (Some((_, proof)), None) => proof,
            _ => return Err(DenyReason::InvalidDpopProof.into()),
        };
        let target = ProofTarget {
            method: req.method.as_deref(),
            scheme: req.scheme.as_deref(),
            host: req.host.as_deref(),
            path: req.path.as_deref(),
        };
        match checker.check(proof, &found.token, target, now) {
            Ok(thumbprint) if thumbprint == jkt => Ok(()),
            Ok(_) => Err(DenyReason::DpopKeyMismatch.into()),
            Err(error) => {
                tracing::debug!(%error, "DPoP proof refused");
                Err(match error {
                    ProofError::Invalid(_) => DenyReason::InvalidDpopProof,
                    ProofError::Replayed => DenyReason::DpopProofReplayed,
                }
                .into())
            }
        }
    }

    /// Whether a verified token is also asked about at its issuer's introspection endpoint: a
    /// locally verified JWT of an issuer with `introspect_jwts`.
    fn asks_about_revocation(&self, verified: &VerifiedToken) -> bool {
        !verified.introspected
            && self
                .issuers
                .get(verified.issuer)
                .is_some_and(|i| i.config.introspect_jwts)
    }

    /// With `introspect_jwts`, a locally verified JWT is also asked about at the issuer's
    /// introspection endpoint (revoked tokens are inactive there).
    async fn check_revocation(
        &self,
        verified: &VerifiedToken,
        token: &str,
        started: Instant,
    ) -> Result<(), Deny> {
        let Some(Some(introspector)) = self.introspectors.get(verified.issuer) else {
            return Err(DenyReason::IntrospectionUnavailable.into());
        };
        match self
            .within_deadline(introspector.introspect(token), started)
            .await?
        {
            Ok(Introspected::Active(_)) => Ok(()),
            Ok(Introspected::Inactive) => Err(DenyReason::InactiveToken.into()),
            Err(_) => Err(DenyReason::IntrospectionUnavailable.into()),
        }
    }

    /// Waits for `work` within what is left of the check deadline since `started`; a result
    /// that is ready sets no timer.
    async fn within_deadline<T>(
        &self,
        work: impl Future<Output = T>,
        started: Instant,
    ) -> Result<T, Deny> {
        let mut work = std::pin::pin!(work);
        if let Some(done) = (&mut work).now_or_never() {
            return Ok(done);
        }
        let remaining = self
            .config
            .limits
            .check_deadline
            .saturating_sub(started.elapsed());
        tokio::time::timeout(remaining, work)
            .await
            .map_err(|_| DenyReason::DeadlineExceeded.into())
    }

    /// Whether tokens of `issuer` may come from `source`: exchanged ones only from the password
    /// issuer, others only from an issuer that takes bearer tokens.
    fn check_auth_method(&self, issuer: usize, source: TokenSource) -> Result<(), Deny> {
        let allowed = match source {
            TokenSource::Password => self.password.as_ref().is_some_and(|(i, _)| *i == issuer),
            TokenSource::Header
            | TokenSource::Dpop
            | TokenSource::Query
            | TokenSource::Cookie
            | TokenSource::CustomHeader
            | TokenSource::Caller => self
                .issuers
                .get(issuer)
                .is_some_and(|i| i.config.auth_methods.bearer),
        };
        if allowed {
            Ok(())
        } else {
            Err(DenyReason::IssuerNotAllowed.into())
        }
    }

    /// Verifies a found token against the issuer, the top-level requirement and the route's: from
    /// the verified-token cache when the same token was verified under the issuer's current key
    /// set, else in full.
    async fn verify(
        &self,
        found: FoundToken<'_>,
        route_req: Option<&Requirement>,
        req: &CheckRequest,
        sources: &TokenConfig,
        route_headers: Option<u64>,
    ) -> Result<Allow, Deny> {
        let dpop_scheme = found.source == TokenSource::Dpop;
        self.verify_found(found, route_req, req, sources, route_headers)
            .await
            .map_err(|deny| Deny {
                dpop_scheme,
                ..deny
            })
    }

    async fn verify_found(
        &self,
        found: FoundToken<'_>,
        route_req: Option<&Requirement>,
        req: &CheckRequest,
        sources: &TokenConfig,
        route_headers: Option<u64>,
    ) -> Result<Allow, Deny> {
        // When the first await began (the check deadline counts from it): a cache hit that
        // needs no introspection reads no clock for it.
        let mut started = None;
        let client_cert = req.client_cert.as_ref();
        let token = found.token.as_ref();
        if token.len() > sources.max_bytes {
            return Err(DenyReason::TokenTooLarge.into());
        }
        let requirements = [Some(&self.config.require), route_req];
        let now = self.clock.now_unix();
        let (cache, cached) = match &self.verified {
            Some(cache) => {
                let lookup = cache.lookup(token, now, |issuer| {
                    self.issuers.get(issuer).and_then(|i| i.keys.generation())
                });
                telemetry::record_verified_cache(lookup.hit.is_some());
                (lookup.key.map(|key| (cache, key)), lookup.hit)
            }
            None => (None, None),
        };
        let verified = match cached {
            // Only what depends on the moment or the route runs again, in the order a first
            // check runs it.
            Some(verified) => {
                self.check_issuer_allowed(verified.issuer, &requirements)?;
                if let Err(deny) = check_times(&verified.times, now, self.leeway(verified.issuer)) {
                    if let Some((cache, key)) = cache {
                        cache.remove(key, token);
                    }
                    return Err(deny);
                }
                check_audience(
                    verified.audiences(),
                    self.audiences(verified.issuer, route_req),
                    self.verify_config(verified.issuer).audience_match,
                )?;
                verified
            }
            None => {
                // Boxed: a key fetch's future is large, and a cache hit should not carry it.
                let since = *started.insert(Instant::now());
                let (verified, cacheable) =
                    Box::pin(self.verify_in_full(token, &requirements, route_req, now, since))
                        .await?;
                let verified = Arc::new(verified);
                if let (Some((cache, key)), true) = (cache, cacheable) {
                    cache.insert(key, token, Arc::clone(&verified));
                }
                verified
            }
        };
        self.check_auth_method(verified.issuer, found.source)?;
        self.check_binding(&verified, client_cert)?;
        self.check_dpop(&verified, &found, req, now)?;
        self.authorize(&verified, &requirements)?;
        if self.asks_about_revocation(&verified) {
            // Boxed, as the rare path it is: a cache hit's future stays small.
            let since = *started.get_or_insert_with(Instant::now);
            Box::pin(self.check_revocation(&verified, token, since)).await?;
        }
        Ok(self.allow(verified, found.source, req, sources, route_headers))
    }

    /// The first check of a token: format, issuer, algorithm, type, times, audience and claim
    /// types (cheap rejections, no key touched), then keys and signature, then what the cache
    /// keeps. The flag says whether the result may be cached: the issuer's key set had the same
    /// generation before the key lookup and after the signature check. A token that is not a
    /// compact JWS goes to introspection where an issuer has it on.
    async fn verify_in_full(
        &self,
        token: &str,
        requirements: &[Option<&Requirement>; 2],
        route_req: Option<&Requirement>,
        now: i64,
        started: Instant,
    ) -> Result<(VerifiedToken, bool), Deny> {
        let cfg = &self.config;
        let jws = match parse_compact(token) {
            Ok(jws) => jws,
            // Not three segments at all: an opaque token (a JWS with an empty segment is a
            // broken JWT, never sent anywhere).
            Err(FormatError::Shape(_))
                if token.bytes().filter(|&b| b == b'.').count() != 2
                    && self.introspectors.iter().any(Option::is_some) =>
            {
                let verified = self
                    .verify_opaque(token, requirements, route_req, now, started)
                    .await?;
                return Ok((verified, false));
            }
            Err(FormatError::Alg) => return Err(DenyReason::AlgorithmNotAllowed.into()),
            Err(FormatError::Crit) => return Err(DenyReason::UnsupportedCritical.into()),
            Err(_) => return Err(DenyReason::MalformedToken.into()),
        };
        let claims = &jws.claims;

        let iss = match claims.get("iss") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(DenyReason::MalformedClaims.into()),
            None => return Err(DenyReason::UnknownIssuer.into()),
        };
        let issuer_index = self
            .issuers
            .iter()
            .position(|i| i.config.issuer == iss)
            .ok_or(DenyReason::UnknownIssuer)?;
        let issuer = &self.issuers[issuer_index];
        self.check_issuer_allowed(issuer_index, requirements)?;
        if !issuer.config.algorithms.contains(&jws.header.alg) {
            return Err(DenyReason::AlgorithmNotAllowed.into());
        }
        if let Some(accepted) = &issuer.config.verify.required_typ
            && !typ_accepted(jws.header.typ.as_deref(), accepted)
        {
            return Err(DenyReason::WrongTokenType.into());
        }
        let checked = self.check_claims(issuer_index, claims, route_req, now)?;

        // Keys, bounded by what is left of the deadline. A lookup that answers at once (the
        // usual case) sets no timer.
        let generation = issuer.keys.generation();
        let lookup = issuer
            .keys
            .lookup(jws.header.kid.as_deref(), jws.header.alg);
        let keys = match self.within_deadline(lookup, started).await? {
            KeyLookup::Found(keys) => keys,
            KeyLookup::UnknownKid => return Err(DenyReason::UnknownKey.into()),
            KeyLookup::AmbiguousKid => return Err(DenyReason::AmbiguousKey.into()),
            KeyLookup::AlgorithmMismatch => {
                return Err(DenyReason::KeyAlgorithmMismatch.into());
            }
            KeyLookup::Unavailable => return Err(DenyReason::KeysUnavailable.into()),
        };
        if !keys.iter().any(|k| signature_valid(&jws, k)) {
            return Err(DenyReason::BadSignature.into());
        }
        let cacheable = generation.is_some() && issuer.keys.generation() == generation;
        // The payload exactly as the token carries it: base64url of the verified JSON.
        let payload = cfg
            .claim_headers
            .payload_header
            .is_some()
            .then(|| Cow::Borrowed(token.split('.').nth(1).unwrap_or("")));
        let verified = self.verified_token(
            issuer_index,
            claims,
            &checked,
            payload,
            generation.unwrap_or_default(),
            now,
        );
        Ok((verified, cacheable))
    }

    /// An opaque token: asked about at each issuer with introspection on, in config order; the
    /// first that calls it active speaks for it, and its answer goes through the checks a JWT's
    /// claims go through. None active: `inactive_token`, or `unavailable` when an endpoint could
    /// not answer.
    async fn verify_opaque(
        &self,
        token: &str,
        requirements: &[Option<&Requirement>; 2],
        route_req: Option<&Requirement>,
        now: i64,
        started: Instant,
    ) -> Result<VerifiedToken, Deny> {
        let mut unavailable = false;
        for (index, introspector) in self.introspectors.iter().enumerate() {
            let Some(introspector) = introspector else {
                continue;
            };
            let claims = match self
                .within_deadline(introspector.introspect(token), started)
                .await?
            {
                Ok(Introspected::Active(claims)) => claims,
                Ok(Introspected::Inactive) => continue,
                Err(_) => {
                    unavailable = true;
                    continue;
                }
            };
            // RFC 7662 §2.2: `iss` is optional; when given it must be this issuer.
            match claims.get("iss") {
                None => {}
                Some(Value::String(iss)) if *iss == *self.issuer_names[index] => {}
                Some(_) => return Err(DenyReason::UnknownIssuer.into()),
            }
            self.check_issuer_allowed(index, requirements)?;
            // Without `exp`, the token is taken to live as long as the answer is remembered.
            let mut with_exp;
            let claims = if claims.contains_key("exp") {
                claims.as_ref()
            } else {
                with_exp = claims.as_ref().clone();
                let ttl = self.issuers[index]
                    .config
                    .introspection
                    .as_ref()
                    .map_or(0, |c| c.cache_ttl.as_secs());
                let ttl = i64::try_from(ttl).unwrap_or(i64::MAX);
                with_exp.insert("exp".to_owned(), Value::from(now.saturating_add(ttl)));
                &with_exp
            };
            let checked = self.check_claims(index, claims, route_req, now)?;
            // The payload header carries the introspection answer, as base64url JSON.
            let payload = self.config.claim_headers.payload_header.is_some().then(|| {
                use base64::Engine as _;
                let json = serde_json::to_vec(claims).unwrap_or_default();
                Cow::Owned(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
            });
            let mut verified = self.verified_token(index, claims, &checked, payload, 0, now);
            verified.introspected = true;
            return Ok(verified);
        }
        Err(if unavailable {
            DenyReason::IntrospectionUnavailable
        } else {
            DenyReason::InactiveToken
        }
        .into())
    }

    /// What a token's claims must be whatever carried them (a JWT or an introspection answer):
    /// times, shape, audience, scopes and confirmation members of the right types.
    fn check_claims<'c>(
        &self,
        issuer: usize,
        claims: &'c Map<String, Value>,
        route_req: Option<&Requirement>,
        now: i64,
    ) -> Result<CheckedClaims<'c>, Deny> {
        let config = &self.issuers[issuer].config;
        let times = token_times(claims)?;
        check_times(&times, now, self.leeway(issuer))?;
        check_shape(claims, &times, &config.verify)?;
        let audiences = token_audiences(claims)?;
        check_audience(
            audiences.iter().copied(),
            self.audiences(issuer, route_req),
            config.verify.audience_match,
        )?;
        let scopes = granted_scopes(claims).map_err(|_| DenyReason::MalformedClaims)?;
        let (x5t, jkt) = confirmation(claims, config.proof_of_possession_mtls, config.dpop)?;
        Ok(CheckedClaims {
            times,
            audiences,
            scopes,
            x5t,
            jkt,
        })
    }

    /// What the cache keeps of a verified token: the texts rules and headers read, in the
    /// groups of `cache::group`.
    fn verified_token(
        &self,
        issuer: usize,
        claims: &Map<String, Value>,
        checked: &CheckedClaims<'_>,
        payload: Option<Cow<'_, str>>,
        generation: u64,
        now: i64,
    ) -> VerifiedToken {
        let cfg = &self.config;
        let mut texts = TextsBuilder::default();
        if let Some(Value::String(sub)) = claims.get("sub") {
            texts.push(sub);
        }
        texts.end_group();
        checked.audiences.iter().for_each(|a| texts.push(a));
        texts.end_group();
        checked.scopes.iter().for_each(|s| texts.push(s));
        texts.end_group();
        let (values, mut rejected) = claim_header_values(claims, &cfg.claim_headers);
        let mut headers_present = 0u64;
        for (i, value) in values.iter().enumerate() {
            let Some(value) = value else { continue };
            if i < 64 && header_value(value).is_some() {
                headers_present |= 1 << i;
                texts.push(value);
            } else if i < 64 {
                rejected |= 1 << i;
            }
        }
        texts.end_group();
        if let Some(x5t) = checked.x5t {
            texts.push(x5t);
        }
        texts.end_group();
        if let Some(payload) = payload
            && payload.len() <= cfg.claim_headers.max_value_bytes
        {
            texts.push(&payload);
        }
        texts.end_group();
        if let Some(jkt) = checked.jkt {
            texts.push(jkt);
        }
        texts.end_group();
        for (path, strings_only) in &self.claim_paths {
            match_texts(path.lookup(claims), *strings_only)
                .iter()
                .for_each(|t| texts.push(t));
            texts.end_group();
        }
        VerifiedToken {
            issuer,
            generation,
            verified_at: now,
            times: checked.times,
            headers_present,
            headers_rejected: rejected,
            introspected: false,
            texts: texts.build(),
        }
    }

    /// Checks the issuers the top-level requirement and the route accept.
    fn check_issuer_allowed(
        &self,
        issuer: usize,
        requirements: &[Option<&Requirement>; 2],
    ) -> Result<(), Deny> {
        let iss = self.issuer_names.get(issuer).map_or("", |n| n.as_ref());
        for r in requirements.iter().flatten() {
            if let Some(allowed) = &r.issuers
                && !allowed.iter().any(|a| a == iss)
            {
                return Err(DenyReason::IssuerNotAllowed.into());
            }
        }
        Ok(())
    }

    /// The audiences a token must name: the route's, else the top-level ones, else the
    /// issuer's.
    fn audiences<'a>(&'a self, issuer: usize, route_req: Option<&'a Requirement>) -> &'a [String] {
        route_req
            .and_then(|r| r.audiences.as_deref())
            .or(self.config.require.audiences.as_deref())
            .or_else(|| {
                self.issuers
                    .get(issuer)
                    .map(|i| i.config.audiences.as_slice())
            })
            .unwrap_or(&[])
    }

    /// The verification settings of `issuer`'s tokens (its own, else the top-level ones).
    fn verify_config(&self, issuer: usize) -> &VerifyConfig {
        self.issuers
            .get(issuer)
            .map_or(&self.config.verify, |i| &i.config.verify)
    }

    fn leeway(&self, issuer: usize) -> i64 {
        i64::try_from(self.verify_config(issuer).leeway.as_secs()).unwrap_or(i64::MAX)
    }

    /// Authorization on a verified token: every requirement's scopes and claim rules.
    fn authorize(
        &self,
        verified: &VerifiedToken,
        requirements: &[Option<&Requirement>; 2],
    ) -> Result<(), Deny> {
        for r in requirements.iter().flatten() {
            if r.scopes
                .iter()
                .any(|s| !verified.scopes().any(|granted| granted == s))
            {
                return Err(Deny {
                    scope: Some(r.scopes.join(" ")),
                    ..Deny::new(DenyReason::InsufficientScope)
                });
            }
            let holds = |c: &ClaimRequirement| {
                let strings_only = c.matcher.strings_only();
                match self
                    .claim_paths
                    .iter()
                    .position(|(p, s)| *p == c.path && *s == strings_only)
                {
                    Some(slot) => c.accepts(verified.claim_texts(slot)),
                    None => false,
                }
            };
            if !r.claims.iter().all(holds) {
                return Err(DenyReason::ClaimMismatch.into());
            }
        }
        Ok(())
    }

    /// The allow for a verified, authorized token.
    fn allow(
        &self,
        verified: Arc<VerifiedToken>,
        source: TokenSource,
        req: &CheckRequest,
        sources: &TokenConfig,
        route_headers: Option<u64>,
    ) -> Allow {
        let cfg = &self.config;
        // The route's claim headers, else the issuer's, else the top-level ones.
        let mapping = route_headers
            .or_else(|| {
                self.issuers
                    .get(verified.issuer)
                    .and_then(|i| i.config.claim_headers)
            })
            .unwrap_or(cfg.claim_headers.default_mapping);
        let mut rejected = (verified.headers_rejected & mapping).count_ones() as usize;
        let mut headers = Vec::with_capacity(mapping.count_ones() as usize);
        for (i, text) in verified.header_values() {
            if i >= 64 || mapping & (1 << i) == 0 {
                continue;
            }
            match (cfg.claim_headers.headers.get(i), header_value(text)) {
                (Some((_, name)), Some(value)) => headers.push((name.clone(), value)),
                _ => rejected += 1,
            }
        }
        if let Some(name) = &cfg.claim_headers.payload_header {
            match verified.payload().and_then(header_value) {
                Some(value) => headers.push((name.clone(), value)),
                None => rejected += 1,
            }
        }
        telemetry::record_claim_headers_rejected(rejected);
        let query_parameters_to_remove = match (&sources.query, source) {
            (Some(name), TokenSource::Query) if sources.strip_upstream => vec![name.clone()],
            _ => Vec::new(),
        };
        let headers_to_remove = if req.frontend.removes_headers() {
            // A token cookie is taken out of the Cookie header, which is set again with the
            // other cookies (or removed when it held only this one).
            if let (Some(name), TokenSource::Cookie, true) =
                (&sources.cookie, source, sources.strip_upstream)
            {
                let rest = cookies_without(&req.token_headers, name);
                if let Some(value) = Some(rest).filter(|r| !r.is_empty())
                    && let Ok(value) = http::HeaderValue::try_from(value)
                {
                    headers.push((http::header::COOKIE, value));
                }
            }
            self.headers_to_remove(&headers, Some(source), req, sources)
        } else {
            Removals::default()
        };
        let issuer = self
            .issuer_names
            .get(verified.issuer)
            .cloned()
            .unwrap_or_else(|| Arc::from(""));
        Allow {
            headers_to_remove,
            headers,
            owned_headers: Arc::clone(&self.owned_headers),
            query_parameters_to_remove,
            identity: Some(Identity::new(verified, issuer)),
            token_source: Some(source),
        }
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
        req: &CheckRequest,
        sources: &TokenConfig,
    ) -> Removals {
        let header_names = &req.header_names;
        let mut remove = Removals {
            spellings: Arc::clone(&self.owned_spellings),
            ..Removals::default()
        };
        for owned in self.owned_headers.iter() {
            let owned = owned.as_str();
            if !headers.iter().any(|(name, _)| name == owned) && !remove.contains(owned) {
                remove.missing.push(owned.to_owned());
            }
        }
        for name in header_names {
            let lower = name.to_ascii_lowercase();
            let folded = lower.replace(['_', '.'], "-");
            if folded != lower
                && self.owned_headers.iter().any(|o| o.as_str() == folded)
                && !remove.contains(&lower)
            {
                remove.others.push(lower);
            }
        }
        let carrier = match source {
            _ if !sources.strip_upstream => None,
            Some(TokenSource::Header | TokenSource::Dpop) => Some("authorization"),
            Some(TokenSource::CustomHeader) => {
                sources.custom_header.as_ref().map(|c| c.name.as_str())
            }
            // Removed only when no other cookie is set again (see `allow`).
            Some(TokenSource::Cookie)
                if !headers.iter().any(|(n, _)| n == http::header::COOKIE) =>
            {
                Some("cookie")
            }
            _ => None,
        };
        if let Some(carrier) = carrier
            && !remove.contains(carrier)
        {
            remove.others.push(carrier.to_owned());
        }
        remove
    }
}

/// `limits.max_concurrent_checks`: checks over it are shed, never queued, so a count is all it
/// takes (no semaphore and its wait list).
#[derive(Debug)]
struct ConcurrencyLimit {
    running: AtomicUsize,
    max: usize,
}

impl ConcurrencyLimit {
    fn new(max: usize) -> Self {
        Self {
            running: AtomicUsize::new(0),
            max,
        }
    }

    /// A place for one more check, held until the guard drops; `None` at the limit.
    fn enter(&self) -> Option<Running<'_>> {
        let before = self.running.fetch_add(1, Ordering::AcqRel);
        let running = Running(&self.running);
        (before < self.max).then_some(running)
    }
}

/// One check counted in a [`ConcurrencyLimit`].
#[derive(Debug)]
struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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

/// What a token must look like beyond its registered claims' types: `max_token_lifetime`
/// (`exp - iat`; such a token needs `iat`) and `required_claims` (present; `sub` a string).
fn check_shape(
    claims: &Map<String, Value>,
    times: &Times,
    settings: &VerifyConfig,
) -> Result<(), Deny> {
    if let Some(max) = settings.max_token_lifetime {
        let max = i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
        match times.iat {
            None => return Err(DenyReason::MissingClaim.into()),
            Some(iat) if times.exp.saturating_sub(iat) > max => {
                return Err(DenyReason::LifetimeTooLong.into());
            }
            Some(_) => {}
        }
    }
    for name in &settings.required_claims {
        match (claims.get(name.as_str()), name.as_str()) {
            (None | Some(Value::Null), _) => return Err(DenyReason::MissingClaim.into()),
            (Some(value), "sub") if !value.is_string() => {
                return Err(DenyReason::MalformedClaims.into());
            }
            _ => {}
        }
    }
    Ok(())
}

/// What a token's claims passed, kept for building its cache entry.
#[derive(Debug)]
struct CheckedClaims<'c> {
    times: Times,
    audiences: Vec<&'c str>,
    scopes: Vec<&'c str>,
    x5t: Option<&'c str>,
    jkt: Option<&'c str>,
}

/// The confirmation members of `cnf` (RFC 7800) the issuer checks: `x5t#S256` (RFC 8705
/// §3.1, the certificate a token is bound to) where `proof_of_possession_mtls` is on, `jkt`
/// (RFC 9449 §6, the DPoP key) where `dpop` is on. Where either is checked, a `cnf` that is not
/// an object, or a member that is not a string, is a malformed claim; elsewhere `cnf` is not
/// looked at.
fn confirmation(
    claims: &Map<String, Value>,
    mtls: PopMtls,
    dpop: DpopMode,
) -> Result<(Option<&str>, Option<&str>), Deny> {
    if mtls == PopMtls::Off && dpop == DpopMode::Off {
        return Ok((None, None));
    }
    let cnf = match claims.get("cnf") {
        None => return Ok((None, None)),
        Some(Value::Object(cnf)) => cnf,
        Some(_) => return Err(DenyReason::MalformedClaims.into()),
    };
    let member = |name: &str, on: bool| match (on, cnf.get(name)) {
        (false, _) | (true, None) => Ok(None),
        (true, Some(Value::String(value))) => Ok(Some(value.as_str())),
        (true, Some(_)) => Err(Deny::from(DenyReason::MalformedClaims)),
    };
    Ok((
        member("x5t#S256", mtls != PopMtls::Off)?,
        member("jkt", dpop != DpopMode::Off)?,
    ))
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

/// The token's times: `exp` (required), `nbf` and `iat`, each a numeric date.
fn token_times(claims: &Map<String, Value>) -> Result<Times, Deny> {
    let date = |name: &str| -> Result<Option<i64>, Deny> {
        claims
            .get(name)
            .map(|v| numeric_date(v).map_err(|_| Deny::new(DenyReason::MalformedClaims)))
            .transpose()
    };
    let exp = date("exp")?.ok_or(DenyReason::MissingExpiry)?;
    Ok(Times {
        exp,
        nbf: date("nbf")?,
        iat: date("iat")?,
    })
}

/// Checks `exp`, `nbf` and `iat` against `now` with the leeway.
fn check_times(times: &Times, now: i64, leeway: i64) -> Result<(), Deny> {
    if now >= times.exp.saturating_add(leeway) {
        return Err(DenyReason::Expired.into());
    }
    if let Some(nbf) = times.nbf
        && now.saturating_add(leeway) < nbf
    {
        return Err(DenyReason::NotYetValid.into());
    }
    if let Some(iat) = times.iat
        && iat > now.saturating_add(leeway)
    {
        return Err(DenyReason::IssuedInFuture.into());
    }
    Ok(())
}

/// The token's `aud` values: a string or an array of strings (none when absent).
fn token_audiences(claims: &Map<String, Value>) -> Result<Vec<&str>, Deny> {
    match claims.get("aud") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.as_str()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().ok_or(DenyReason::MalformedClaims.into()))
            .collect(),
        Some(_) => Err(DenyReason::MalformedClaims.into()),
    }
}

/// Checks the token's audiences against the ones required.
fn check_audience<'a>(
    token_audiences: impl Iterator<Item = &'a str> + Clone,
    audiences: &[String],
    mode: AudienceMatch,
) -> Result<(), Deny> {
    let has = |a: &String| token_audiences.clone().any(|t| t == a);
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
