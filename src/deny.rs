//! THE response table: how a denial is answered on every mouth. One place maps a deny kind and a
//! frontend to the HTTP status, the gRPC code, the RFC 6750 error and challenge, `Retry-After`
//! and the fixed body; the HTTP and gRPC adapters only copy these values into their protocol.
//! Every `match` here is exhaustive without a wildcard arm, so a new kind or frontend does not
//! compile until someone decides its answer (README "Responses" is this table in prose).

use http::StatusCode;
use tonic::Code;

use crate::config::{Config, DpopMode};
use crate::decision::{Deny, DenyKind, Frontend};

/// What the challenges of one config say besides the error: worked out once per config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenges {
    /// The realm of every challenge.
    pub realm: String,
    /// Whether `Bearer` is offered (not when every issuer requires DPoP).
    pub bearer: bool,
    /// The `algs` of the `DPoP` challenge (RFC 9449 §7.1), where an issuer accepts DPoP.
    pub dpop_algs: Option<String>,
    /// The RFC 9728 metadata URL, named as `resource_metadata` in each challenge.
    pub resource_metadata: Option<String>,
}

impl Challenges {
    /// The challenges of `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            realm: config.http.realm.clone(),
            bearer: config.issuers.iter().any(|i| i.dpop != DpopMode::Required),
            dpop_algs: config.dpop_accepted().then(|| {
                let algs: Vec<&str> = config
                    .dpop_proofs
                    .algorithms
                    .iter()
                    .map(|a| a.as_str())
                    .collect();
                algs.join(" ")
            }),
            resource_metadata: config.resource_metadata.as_ref().map(|m| m.url.clone()),
        }
    }

    /// Bearer challenges only, in `realm`.
    pub fn bearer(realm: &str) -> Self {
        Self {
            realm: realm.to_owned(),
            bearer: true,
            dpop_algs: None,
            resource_metadata: None,
        }
    }
}

/// The answer to a denial on one frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyAnswer {
    /// HTTP status (on ext_authz gRPC: the status of the denied HTTP response Envoy sends).
    pub status: StatusCode,
    /// gRPC code of the ext_authz `CheckResponse.status` (the RPC itself is OK).
    pub grpc_code: Code,
    /// The `WWW-Authenticate` value, if any.
    pub challenge: Option<String>,
    /// Seconds for `Retry-After`, if any.
    pub retry_after: Option<u64>,
    /// The fixed text a client sees; details go to the log only.
    pub body: &'static str,
}

/// How a frontend presents denials: the proxies behind some mouths misread some statuses.
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

fn profile(frontend: Frontend) -> Profile {
    match frontend {
        // ext_authz gRPC denies with a CheckResponse, which failure_mode_allow never touches;
        // TokenService answers with a body, not a status.
        Frontend::ForwardAuth | Frontend::Grpc | Frontend::TokenService => Profile::Plain,
        Frontend::EnvoyHttp => Profile::NoServerErrors,
        Frontend::Nginx => Profile::Only401And403,
    }
}

fn status(kind: DenyKind, profile: Profile) -> StatusCode {
    match (kind, profile) {
        (DenyKind::Unauthenticated | DenyKind::InvalidToken | DenyKind::InvalidDpopProof, _) => {
            StatusCode::UNAUTHORIZED
        }
        (DenyKind::InsufficientScope | DenyKind::Forbidden, _) => StatusCode::FORBIDDEN,
        (DenyKind::InvalidRequest, Profile::Plain | Profile::NoServerErrors) => {
            StatusCode::BAD_REQUEST
        }
        (DenyKind::Unavailable, Profile::Plain) => StatusCode::SERVICE_UNAVAILABLE,
        (DenyKind::InvalidRequest, Profile::Only401And403)
        | (DenyKind::Unavailable, Profile::NoServerErrors | Profile::Only401And403) => {
            StatusCode::UNAUTHORIZED
        }
    }
}

/// What a kind is, whatever the frontend.
struct KindRow {
    /// gRPC code of the ext_authz `CheckResponse.status`.
    grpc_code: Code,
    /// RFC 6750 §3.1 error code and description; `None` where RFC 6750 has none (no
    /// credentials at all, a policy refusal, an outage).
    error: Option<(&'static str, &'static str)>,
    /// Whether the answer carries a `WWW-Authenticate` challenge (a 401 always does).
    challenge: bool,
    /// The fixed body.
    body: &'static str,
}

fn row(kind: DenyKind) -> KindRow {
    match kind {
        DenyKind::Unauthenticated => KindRow {
            grpc_code: Code::Unauthenticated,
            error: None,
            challenge: true,
            body: "authentication required",
        },
        DenyKind::InvalidToken => KindRow {
            grpc_code: Code::Unauthenticated,
            error: Some(("invalid_token", "the access token is invalid")),
            challenge: true,
            body: "invalid token",
        },
        DenyKind::InvalidDpopProof => KindRow {
            grpc_code: Code::Unauthenticated,
            error: Some(("invalid_dpop_proof", "the DPoP proof is invalid")),
            challenge: true,
            body: "invalid DPoP proof",
        },
        DenyKind::InvalidRequest => KindRow {
            grpc_code: Code::InvalidArgument,
            error: Some(("invalid_request", "the request is malformed")),
            challenge: true,
            body: "malformed request",
        },
        DenyKind::InsufficientScope => KindRow {
            grpc_code: Code::PermissionDenied,
            error: Some((
                "insufficient_scope",
                "the access token does not grant access to this resource",
            )),
            challenge: true,
            body: "insufficient scope",
        },
        // A policy refusal is no matter of credentials: no challenge.
        DenyKind::Forbidden => KindRow {
            grpc_code: Code::PermissionDenied,
            error: None,
            challenge: false,
            body: "forbidden",
        },
        DenyKind::Unavailable => KindRow {
            grpc_code: Code::Unavailable,
            error: None,
            challenge: true,
            body: "authentication temporarily unavailable",
        },
    }
}

/// The `error` of a `TokenService/Verify` denial: the RFC 6750 code, or `unavailable` for an
/// outage (retry later). Empty for the kinds Verify never answers (no token, route refusal).
pub fn verify_error(kind: DenyKind) -> &'static str {
    match row(kind).error {
        Some((code, _)) => code,
        None if kind == DenyKind::Unavailable => "unavailable",
        None => "",
    }
}

/// The answer to `deny` on `frontend`, with `challenges`' realm, schemes and metadata URL.
pub fn answer(deny: &Deny, frontend: Frontend, challenges: &Challenges) -> DenyAnswer {
    let row = row(deny.kind());
    let status = status(deny.kind(), profile(frontend));
    // A 401 must carry a challenge (RFC 9110 §15.5.2), whatever the kind that led to it.
    let challenge = (row.challenge || status == StatusCode::UNAUTHORIZED).then(|| {
        let realm = challenges.realm.as_str();
        // RFC 9110 §11.6.1: several challenges in one field, comma-separated (one field,
        // because nginx's auth_request_set copies only the first).
        let mut schemes: Vec<String> = Vec::new();
        if deny.basic_challenge && status == StatusCode::UNAUTHORIZED {
            schemes.push(format!("Basic realm=\"{realm}\", charset=\"UTF-8\""));
        }
        let mut common = format!("realm=\"{realm}\"");
        if let Some(url) = &challenges.resource_metadata {
            common.push_str(&format!(", resource_metadata=\"{url}\""));
        }
        let mut error = String::new();
        if let Some((code, description)) = row.error {
            error = format!(", error=\"{code}\", error_description=\"{description}\"");
            if let Some(scope) = &deny.scope {
                error.push_str(&format!(", scope=\"{scope}\""));
            }
        }
        // The error goes on the scheme the request used: DPoP for a proof's fault or a token
        // presented with it, Bearer otherwise.
        let error_on_dpop = challenges.dpop_algs.is_some()
            && (deny.kind() == DenyKind::InvalidDpopProof
                || deny.dpop_scheme
                || !challenges.bearer);
        if challenges.bearer || challenges.dpop_algs.is_none() {
            let error = if error_on_dpop { "" } else { error.as_str() };
            schemes.push(format!("Bearer {common}{error}"));
        }
        if let Some(algs) = &challenges.dpop_algs {
            let error = if error_on_dpop { error.as_str() } else { "" };
            schemes.push(format!("DPoP {common}, algs=\"{algs}\"{error}"));
        }
        schemes.join(", ")
    });
    DenyAnswer {
        status,
        grpc_code: row.grpc_code,
        challenge,
        retry_after: deny.retry_after,
        body: row.body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::DenyReason;

    fn deny(reason: DenyReason) -> Deny {
        Deny {
            scope: (reason == DenyReason::InsufficientScope).then(|| "admin".to_owned()),
            ..Deny::new(reason)
        }
    }

    fn status_of(reason: DenyReason, frontend: Frontend) -> u16 {
        answer(&deny(reason), frontend, &Challenges::bearer("authgate"))
            .status
            .as_u16()
    }

    #[test]
    fn statuses_follow_the_response_table_for_every_frontend() {
        use DenyReason::*;
        // (reason, /auth, /envoy, /auth/nginx, ext_authz gRPC)
        let table = [
            (MissingToken, 401, 401, 401, 401),
            (BadSignature, 401, 401, 401, 401),
            (MultipleTokens, 400, 400, 401, 400),
            (InsufficientScope, 403, 403, 403, 403),
            (RouteDenied, 403, 403, 403, 403),
            (KeysUnavailable, 503, 401, 401, 503),
            (Overloaded, 503, 401, 401, 503),
        ];
        for (reason, plain, envoy, nginx, grpc) in table {
            assert_eq!(status_of(reason, Frontend::ForwardAuth), plain, "{reason}");
            assert_eq!(status_of(reason, Frontend::EnvoyHttp), envoy, "{reason}");
            assert_eq!(status_of(reason, Frontend::Nginx), nginx, "{reason}");
            assert_eq!(status_of(reason, Frontend::Grpc), grpc, "{reason}");
        }
    }

    #[test]
    fn grpc_codes_follow_the_kind() {
        use DenyReason::*;
        for (reason, code) in [
            (MissingToken, Code::Unauthenticated),
            (Expired, Code::Unauthenticated),
            (EmptyToken, Code::InvalidArgument),
            (InsufficientScope, Code::PermissionDenied),
            (RouteDenied, Code::PermissionDenied),
            (KeysUnavailable, Code::Unavailable),
        ] {
            assert_eq!(
                answer(&deny(reason), Frontend::Grpc, &Challenges::bearer("r")).grpc_code,
                code,
                "{reason}"
            );
        }
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        use DenyReason::*;
        let challenge = |r, f| answer(&deny(r), f, &Challenges::bearer("authgate")).challenge;
        assert_eq!(
            challenge(MissingToken, Frontend::ForwardAuth).as_deref(),
            Some(r#"Bearer realm="authgate""#)
        );
        assert!(
            challenge(Expired, Frontend::ForwardAuth)
                .expect("challenge")
                .contains(r#"error="invalid_token""#)
        );
        assert!(
            challenge(EmptyToken, Frontend::Nginx)
                .expect("challenge")
                .contains(r#"error="invalid_request""#)
        );
        let scope = challenge(InsufficientScope, Frontend::Grpc).expect("challenge");
        assert!(
            scope.contains(r#"error="insufficient_scope""#) && scope.contains(r#"scope="admin""#)
        );
        for frontend in Frontend::ALL {
            assert_eq!(challenge(RouteDenied, frontend), None, "{frontend:?}");
        }
    }

    #[test]
    fn every_401_carries_a_challenge_and_every_unavailable_a_retry_after() {
        for reason in DenyReason::ALL {
            for frontend in Frontend::ALL {
                let a = answer(&deny(reason), frontend, &Challenges::bearer("authgate"));
                if a.status == StatusCode::UNAUTHORIZED {
                    assert!(a.challenge.is_some(), "{reason} on {frontend:?}");
                }
                assert_eq!(
                    a.retry_after.is_some(),
                    reason.kind() == DenyKind::Unavailable,
                    "{reason}"
                );
                assert!(a.status.is_client_error() || a.status == 503, "{reason}");
            }
        }
        let nginx = answer(
            &deny(DenyReason::KeysUnavailable),
            Frontend::Nginx,
            &Challenges::bearer("a"),
        );
        assert_eq!(
            (
                nginx.status.as_u16(),
                nginx.challenge.as_deref(),
                nginx.retry_after
            ),
            (401, Some(r#"Bearer realm="a""#), Some(5))
        );
    }

    #[test]
    fn verify_errors_are_the_rfc_6750_codes_or_unavailable() {
        assert_eq!(verify_error(DenyKind::InvalidToken), "invalid_token");
        assert_eq!(verify_error(DenyKind::InvalidRequest), "invalid_request");
        assert_eq!(
            verify_error(DenyKind::InsufficientScope),
            "insufficient_scope"
        );
        assert_eq!(verify_error(DenyKind::Unavailable), "unavailable");
    }
}
