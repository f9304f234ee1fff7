//! Envoy ext_authz requests as Envoy builds them, for the gRPC tests.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

/// What Envoy sends for `GET https://api.example.com{uri}` with these `Authorization` values: headers it could represent as text in `headers` (repeats joined with
/// `,`, as Envoy joins them), anything else as bytes in `header_map`.
pub(crate) fn envoy_check(uri: &str, auth: &[Vec<u8>]) -> CheckRequest {
    let mut headers = HashMap::new();
    let mut header_map = None;
    if !auth.is_empty() {
        match auth
            .iter()
            .map(|v| String::from_utf8(v.clone()))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(values) => {
                headers.insert("authorization".to_owned(), values.join(","));
            }
            Err(_) => {
                header_map = Some(HeaderMap {
                    headers: auth
                        .iter()
                        .map(|v| HeaderValue {
                            key: "authorization".to_owned(),
                            value: String::new(),
                            raw_value: v.clone(),
                        })
                        .collect(),
                });
            }
        }
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: "GET".to_owned(),
                    path: uri.to_owned(),
                    host: "api.example.com".to_owned(),
                    scheme: "https".to_owned(),
                    protocol: "HTTP/1.1".to_owned(),
                    headers,
                    header_map,
                    ..HttpRequest::default()
                }),
            }),
            ..AttributeContext::default()
        }),
    }
}

/// What Envoy sends for `GET https://api.example.com{uri}` with these request headers (text
/// values, names lower-case as Envoy passes them).
pub(crate) fn envoy_check_headers(uri: &str, headers: &[(&str, String)]) -> CheckRequest {
    let mut request = envoy_check(uri, &[]);
    if let Some(http) = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.headers = headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect();
    }
    request
}
