//! An allow's `CheckResponse`, written to the wire straight from the decision's own strings.
//!
//! prost's generated `CheckResponse` owns every string it holds: building one per allow copied
//! each claim header name and value, every header to remove and the identity metadata (a map
//! of owned keys) into fresh allocations, only for the encoder to copy them again; on the
//! cache-hit path that was the largest cost left after the check itself. An allow has a fixed
//! shape, so it is written here with prost's own wire primitives instead, and the tests decode
//! the bytes with prost's `CheckResponse` to show the two agree. Denials are rare on a hot path
//! and keep the generated message.
//!
//! The shape (field numbers from envoy/service/auth/v3/external_auth.proto and the messages it
//! uses):
//!
//! ```text
//! CheckResponse { status: Status {} = 1, ok_response: OkHttpResponse = 3,
//!                 dynamic_metadata: Struct = 4 }
//! OkHttpResponse { headers: repeated HeaderValueOption = 2, headers_to_remove: repeated string = 5,
//!                  query_parameters_to_remove: repeated string = 8 }
//! HeaderValueOption { header: HeaderValue { key = 1, value = 2 } = 1, append_action = 3 }
//! Struct { fields: map<string, Value> = 1 }   (a map entry: key = 1, value = 2)
//! Value { string_value = 3 | list_value: ListValue { values: repeated Value = 1 } = 6 }
//! ```

use envoy_types::ext_authz::v3::pb::HeaderAppendAction;
use prost::bytes::BufMut;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::decision::{Allow, Identity};

/// A length-delimited field whose body is `len` bytes: its key, length and body.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Writes the key and length of a length-delimited field; its `len` body bytes follow.
fn put_field_header(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// Writes a string field (also one element of a repeated string).
fn put_str(tag: u32, s: &str, buf: &mut impl BufMut) {
    put_field_header(tag, s.len(), buf);
    buf.put_slice(s.as_bytes());
}

/// A singular proto3 string: left out when empty, as prost does.
fn opt_str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        field_len(tag, s.len())
    }
}

fn put_opt_str(tag: u32, s: &str, buf: &mut impl BufMut) {
    if !s.is_empty() {
        put_str(tag, s, buf);
    }
}

/// `OVERWRITE_IF_EXISTS_OR_ADD`: a claim header replaces whatever the client sent.
const OVERWRITE: u64 = HeaderAppendAction::OverwriteIfExistsOrAdd as u64;

/// `HeaderValue { key, value }`.
fn header_value_len(name: &str, value: &str) -> usize {
    opt_str_len(1, name) + opt_str_len(2, value)
}

/// `HeaderValueOption { header, append_action }`.
fn header_option_len(name: &str, value: &str) -> usize {
    field_len(1, header_value_len(name, value)) + key_len(3) + encoded_len_varint(OVERWRITE)
}

fn put_header_option(name: &str, value: &str, buf: &mut impl BufMut) {
    put_field_header(1, header_value_len(name, value), buf);
    put_opt_str(1, name, buf);
    put_opt_str(2, value, buf);
    encode_key(3, WireType::Varint, buf);
    encode_varint(OVERWRITE, buf);
}

/// The claim headers that go out: values that are not visible ASCII cannot be sent as a
/// `string` field and are left out (the decision only makes visible-ASCII values).
fn headers(allow: &Allow) -> impl Iterator<Item = (&str, &str)> {
    allow
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
}

fn ok_response_len(allow: &Allow) -> usize {
    headers(allow)
        .map(|(name, value)| field_len(2, header_option_len(name, value)))
        .chain(
            allow
                .headers_to_remove
                .iter()
                .map(|n| field_len(5, n.len())),
        )
        .chain(
            allow
                .query_parameters_to_remove
                .iter()
                .map(|n| field_len(8, n.len())),
        )
        .sum()
}

fn put_ok_response(allow: &Allow, buf: &mut impl BufMut) {
    for (name, value) in headers(allow) {
        put_field_header(2, header_option_len(name, value), buf);
        put_header_option(name, value, buf);
    }
    for name in allow.headers_to_remove.iter() {
        put_str(5, name, buf);
    }
    for name in &allow.query_parameters_to_remove {
        put_str(8, name, buf);
    }
}

/// `Value { string_value }`.
fn string_value_len(s: &str) -> usize {
    field_len(3, s.len())
}

/// `ListValue { values }` of string values.
fn string_list_len<'a>(items: impl Iterator<Item = &'a str>) -> usize {
    items.map(|s| field_len(1, string_value_len(s))).sum()
}

/// One `Struct.fields` map entry: `{ key = 1, value = 2 }` with a `Value` of `value_len` bytes.
fn entry_len(key: &str, value_len: usize) -> usize {
    field_len(1, key.len()) + field_len(2, value_len)
}

fn put_entry_header(key: &str, value_len: usize, buf: &mut impl BufMut) {
    put_field_header(1, entry_len(key, value_len), buf);
    put_str(1, key, buf);
    put_field_header(2, value_len, buf);
}

fn put_string_entry(key: &str, value: &str, buf: &mut impl BufMut) {
    put_entry_header(key, string_value_len(value), buf);
    put_str(3, value, buf);
}

/// The lengths of the metadata's `subject`, `issuer` and `scopes` values.
fn metadata_value_lens(identity: &Identity) -> (Option<usize>, usize, usize) {
    let subject = identity.subject().map(string_value_len);
    let issuer = string_value_len(identity.issuer());
    let scopes = field_len(6, string_list_len(identity.scopes()));
    (subject, issuer, scopes)
}

/// `Struct { subject, issuer, scopes }` for Envoy's dynamic metadata (access logs, RBAC).
fn metadata_len(identity: &Identity) -> usize {
    let (subject, issuer, scopes) = metadata_value_lens(identity);
    subject.map_or(0, |len| field_len(1, entry_len("subject", len)))
        + field_len(1, entry_len("issuer", issuer))
        + field_len(1, entry_len("scopes", scopes))
}

fn put_metadata(identity: &Identity, buf: &mut impl BufMut) {
    if let Some(subject) = identity.subject() {
        put_string_entry("subject", subject, buf);
    }
    put_string_entry("issuer", identity.issuer(), buf);
    let (_, _, scopes) = metadata_value_lens(identity);
    put_entry_header("scopes", scopes, buf);
    put_field_header(6, string_list_len(identity.scopes()), buf);
    for scope in identity.scopes() {
        put_field_header(1, string_value_len(scope), buf);
        put_str(3, scope, buf);
    }
}

/// The encoded length of `allow`'s CheckResponse.
pub(super) fn encoded_len(allow: &Allow) -> usize {
    // status: an empty google.rpc.Status (code OK).
    field_len(1, 0)
        + field_len(3, ok_response_len(allow))
        + allow
            .identity
            .as_ref()
            .map_or(0, |identity| field_len(4, metadata_len(identity)))
}

/// Writes `allow`'s CheckResponse: status OK, the OkHttpResponse, and the identity as dynamic
/// metadata.
pub(super) fn encode(allow: &Allow, buf: &mut impl BufMut) {
    put_field_header(1, 0, buf);
    put_field_header(3, ok_response_len(allow), buf);
    put_ok_response(allow, buf);
    if let Some(identity) = &allow.identity {
        put_field_header(4, metadata_len(identity), buf);
        put_metadata(identity, buf);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use envoy_types::ext_authz::v3::pb::{
        CheckResponse, HeaderValue, HeaderValueOption, HttpResponse, OkHttpResponse,
    };
    use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
    use envoy_types::pb::google::rpc;
    use prost::Message as _;
    use serde_json::json;

    use super::*;
    use crate::config::parse_yaml;
    use crate::decision::{CheckRequest, Decider, Decision, FixedClock, Frontend, TrustedIssuer};
    use crate::demo::signing::SigningKey;
    use crate::keys::jwk::parse_jwk;
    use crate::keys::{KeySet, StaticKeys};
    use crate::token::TokenSource;
    use crate::verify::Alg;

    const NOW: i64 = 1_700_000_000;
    const ISS: &str = "https://idp.test";

    /// The allow a real decider gives for `claims`, with `config` added and `names` as the
    /// request's header names, in gRPC mode.
    async fn allow(config: &str, claims: serde_json::Value, names: &[&str]) -> Allow {
        let yaml = format!("issuers: [{{issuer: \"{ISS}\"}}]\naudiences: [api]\n{config}");
        let config = Arc::new(parse_yaml(&yaml).expect("yaml").validate().expect("valid"));
        let key = SigningKey::generate(Alg::ES256, "k").expect("key");
        let keys = Arc::new(StaticKeys::new(KeySet::new(vec![
            parse_jwk(&key.public_jwk()).expect("jwk"),
        ])));
        let issuers = vec![TrustedIssuer {
            config: config.issuers[0].clone(),
            keys,
        }];
        let decider = Decider::new(config, issuers, Arc::new(FixedClock::at(NOW)));
        let token = key.sign_jwt(&claims).expect("sign");
        let check = CheckRequest {
            authorization: vec![format!("Bearer {token}").into_bytes()],
            header_names: names.iter().map(|&n| n.to_owned()).collect(),
            ..CheckRequest::new(Frontend::Grpc)
        };
        match decider.decide(&check).await {
            Decision::Allow(allow) => allow,
            Decision::Deny(deny) => panic!("denied: {deny:?}"),
        }
    }

    fn string_value(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.to_owned())),
        }
    }

    /// What prost's generated messages say the allow is: the oracle the bytes must decode to.
    fn expected(allow: &Allow) -> CheckResponse {
        #[allow(deprecated, reason = "`append` stays unset when append_action is used")]
        let headers = headers(allow)
            .map(|(key, value)| HeaderValueOption {
                header: Some(HeaderValue {
                    key: key.to_owned(),
                    value: value.to_owned(),
                    raw_value: Vec::new(),
                }),
                append: None,
                append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
                keep_empty_value: false,
            })
            .collect();
        let metadata = allow.identity.as_ref().map(|identity| {
            let mut fields = HashMap::new();
            if let Some(sub) = identity.subject() {
                fields.insert("subject".to_owned(), string_value(sub));
            }
            fields.insert("issuer".to_owned(), string_value(identity.issuer()));
            let values = identity.scopes().map(string_value).collect();
            let scopes = Kind::ListValue(ListValue { values });
            fields.insert("scopes".to_owned(), Value { kind: Some(scopes) });
            Struct { fields }
        });
        CheckResponse {
            status: Some(rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers,
                headers_to_remove: allow.headers_to_remove.iter().map(str::to_owned).collect(),
                query_parameters_to_remove: allow.query_parameters_to_remove.clone(),
                ..OkHttpResponse::default()
            })),
            dynamic_metadata: metadata,
        }
    }

    fn decoded(allow: &Allow) -> CheckResponse {
        let mut buf = Vec::new();
        encode(allow, &mut buf);
        assert_eq!(buf.len(), encoded_len(allow), "encoded_len is exact");
        CheckResponse::decode(buf.as_slice()).expect("prost decodes it")
    }

    fn claims(patch: serde_json::Value) -> serde_json::Value {
        let mut claims = json!({"iss": ISS, "sub": "alice", "aud": "api", "exp": NOW + 300, "scope": "read write"});
        for (k, v) in patch.as_object().expect("object") {
            if v.is_null() {
                claims.as_object_mut().expect("object").remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    }

    #[tokio::test]
    async fn an_allow_decodes_with_prost_to_what_the_generated_messages_would_send() {
        let allow = allow("", claims(json!({})), &["x_auth_subject"]).await;
        assert!(!allow.headers.is_empty() && !allow.headers_to_remove.is_empty());
        let response = decoded(&allow);
        assert_eq!(response, expected(&allow));
        let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
            panic!("an OK response: {response:?}");
        };
        let subject = ok.headers.iter().find_map(|h| {
            let h = h.header.as_ref()?;
            (h.key == "x-auth-subject").then_some(h.value.as_str())
        });
        assert_eq!(subject, Some("alice"));
        assert!(ok.headers_to_remove.iter().any(|h| h == "x_auth_subject"));
    }

    #[tokio::test]
    async fn shapes_at_the_edges_decode_the_same_no_subject_no_scopes_long_values_query_removal() {
        let long = "s".repeat(300); // lengths past one varint byte
        let cases = [
            ("", claims(json!({"sub": null, "scope": null}))),
            ("", claims(json!({"sub": long, "scope": ""}))),
            (
                "claim_headers: [{claim: email, header: X-Email}, {claim: sub, header: X-Sub}]",
                claims(json!({"email": "", "scope": "a b c d e f g"})),
            ),
            (
                "token: {query: {enabled: true}, strip_upstream: true}",
                claims(json!({})),
            ),
        ];
        for (config, claims) in cases {
            let allow = allow(config, claims.clone(), &[]).await;
            assert_eq!(decoded(&allow), expected(&allow), "{config} {claims}");
        }
        // An allow made by hand with a query parameter to remove and no identity.
        let mut bare = allow("", claims(json!({})), &[]).await;
        bare.identity = None;
        bare.token_source = Some(TokenSource::Query);
        bare.query_parameters_to_remove = vec!["access_token".to_owned(), String::new()];
        let response = decoded(&bare);
        assert_eq!(response, expected(&bare));
        assert!(response.dynamic_metadata.is_none());
    }
}
