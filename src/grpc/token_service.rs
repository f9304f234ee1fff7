//! `authgate.v1.TokenService/Verify`: a token handed over as it is (no token source applies),
//! verified by the core's typed entry `Decider::verify_token`, answered with the identity and
//! claims, or with the reason and the `error` from `deny.rs`. A denial is an answer, not an RPC
//! error.

use std::sync::Arc;

use envoy_types::pb::google::protobuf::{ListValue, Struct, Value as PbValue, value::Kind};
use serde_json::Value;
use tonic::{Request, Response, Status};

use super::pb::token_service_server::TokenService;
use super::pb::{VerifyRequest, VerifyResponse};
use crate::cert::ClientCert;
use crate::config::Requirement;
use crate::decision::{Decision, DenyReason};
use crate::deny;
use crate::live::Live;
use crate::verify::parse_compact;

/// The `TokenService` implementation.
#[derive(Debug, Clone)]
pub struct Tokens {
    live: Arc<Live>,
}

impl Tokens {
    /// The service for this decider.
    pub fn new(live: Arc<Live>) -> Self {
        Self { live }
    }
}

fn json_to_pb(value: &Value) -> PbValue {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_to_pb).collect(),
        }),
        Value::Object(map) => Kind::StructValue(object_to_struct(map)),
    };
    PbValue { kind: Some(kind) }
}

fn object_to_struct(map: &serde_json::Map<String, Value>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_pb(v)))
            .collect(),
    }
}

#[tonic::async_trait]
impl TokenService for Tokens {
    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> Result<Response<VerifyResponse>, Status> {
        let req = request.into_inner();
        let requirement = Requirement {
            audiences: (!req.audiences.is_empty()).then_some(req.audiences),
            scopes: req.scopes,
            ..Requirement::default()
        };
        let client_cert = Some(req.client_certificate.clone())
            .filter(|c| !c.is_empty())
            .map(ClientCert::Encoded);
        let response = match self
            .live
            .get()
            .verify_token(&req.token, &requirement, client_cert)
            .await
        {
            Decision::Allow(allow) => {
                let headers = allow
                    .headers
                    .iter()
                    .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                    .collect();
                // The claims of a verified token: the payload read again (the core keeps only
                // what checks and headers need, and may have answered from its cache).
                let claims = parse_compact(&req.token).map(|jws| jws.claims);
                match (allow.identity, claims) {
                    (Some(identity), Ok(claims)) => VerifyResponse {
                        allowed: true,
                        reason: "valid_token".to_owned(),
                        error: String::new(),
                        subject: identity.subject().unwrap_or_default().to_owned(),
                        claims: Some(object_to_struct(&claims)),
                        issuer: identity.issuer().to_owned(),
                        expires_at: identity.expires_at(),
                        scopes: identity.scopes().map(str::to_owned).collect(),
                        headers,
                    },
                    // verify_token never allows without an identity, nor a token that does not
                    // parse; should it ever, this is an internal error, not a pass.
                    _ => VerifyResponse {
                        allowed: false,
                        reason: DenyReason::InternalError.as_str().to_owned(),
                        error: deny::verify_error(DenyReason::InternalError.kind()).to_owned(),
                        ..VerifyResponse::default()
                    },
                }
            }
            Decision::Deny(d) => VerifyResponse {
                allowed: false,
                reason: d.reason.as_str().to_owned(),
                error: deny::verify_error(d.kind()).to_owned(),
                ..VerifyResponse::default()
            },
        };
        Ok(Response::new(response))
    }
}
