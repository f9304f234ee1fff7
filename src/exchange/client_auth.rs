//! How authgate authenticates itself as a client at an issuer's token endpoint:
//! `client_secret_basic` and `client_secret_post` (RFC 6749 §2.3.1) and `private_key_jwt`
//! (RFC 7523 §2.2, OpenID Connect Core §9). Secrets and keys never reach a log.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;

use crate::config::{ClientAuth, ClientConfig};
use crate::demo::signing::{SigningError, SigningKey};

/// The `client_assertion_type` of a JWT assertion (RFC 7523 §2.2).
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Lifetime of a `private_key_jwt` assertion.
const ASSERTION_LIFETIME_SECS: u64 = 60;

/// What one token endpoint request carries to authenticate the client.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The `Authorization` header value (`client_secret_basic`).
    pub authorization: Option<String>,
    /// Form parameters to add.
    pub form: Vec<(&'static str, String)>,
}

/// The credentials of `client` for one request to `token_endpoint` (the assertion's audience).
pub fn credentials(
    client: &ClientConfig,
    token_endpoint: &str,
) -> Result<Credentials, SigningError> {
    let id = client.id.clone();
    Ok(match &client.auth {
        ClientAuth::SecretBasic(secret) => {
            // RFC 6749 §2.3.1: both are form-encoded before they are joined.
            let user: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
            let pass: String =
                form_urlencoded::byte_serialize(secret.expose().as_bytes()).collect();
            Credentials {
                authorization: Some(format!(
                    "Basic {}",
                    STANDARD.encode(format!("{user}:{pass}"))
                )),
                form: Vec::new(),
            }
        }
        ClientAuth::SecretPost(secret) => Credentials {
            authorization: None,
            form: vec![
                ("client_id", id),
                ("client_secret", secret.expose().to_owned()),
            ],
        },
        ClientAuth::PrivateKeyJwt(key) => Credentials {
            authorization: None,
            form: vec![
                ("client_id", id),
                ("client_assertion_type", JWT_BEARER_ASSERTION.to_owned()),
                (
                    "client_assertion",
                    assertion(&client.id, key, token_endpoint)?,
                ),
            ],
        },
    })
}

/// RFC 7523 §3: `iss` = `sub` = the client id, `aud` = the token endpoint, a unique `jti`,
/// `exp` a minute ahead; `kid` from the key when it has one.
fn assertion(
    client_id: &str,
    key: &SigningKey,
    token_endpoint: &str,
) -> Result<String, SigningError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).map_err(|source| SigningError::Signing {
        alg: key.alg(),
        source,
    })?;
    let mut header = json!({"alg": key.alg().as_str(), "typ": "JWT"});
    if !key.kid().is_empty() {
        header["kid"] = json!(key.kid());
    }
    let claims = json!({
        "iss": client_id,
        "sub": client_id,
        "aud": token_endpoint,
        "jti": URL_SAFE_NO_PAD.encode(jti),
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_SECS,
    });
    key.sign_with_header(&header, &claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn client(auth: ClientAuth) -> ClientConfig {
        ClientConfig {
            id: "kong gw".to_owned(),
            auth,
        }
    }

    fn payload(jwt: &str) -> serde_json::Value {
        let part = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn secret_basic_form_encodes_id_and_secret_before_joining_them() {
        let creds = credentials(
            &client(ClientAuth::SecretBasic(Secret::new("p:a ss/+"))),
            "https://idp.test/token",
        )
        .unwrap();
        let value = creds.authorization.unwrap();
        let decoded = STANDARD
            .decode(value.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            "kong+gw:p%3Aa+ss%2F%2B"
        );
        assert!(creds.form.is_empty());
    }

    #[test]
    fn secret_post_sends_id_and_secret_in_the_form() {
        let creds = credentials(
            &client(ClientAuth::SecretPost(Secret::new("s3cret"))),
            "https://idp.test/token",
        )
        .unwrap();
        assert_eq!(creds.authorization, None);
        assert_eq!(
            creds.form,
            [
                ("client_id", "kong gw".to_owned()),
                ("client_secret", "s3cret".to_owned())
            ]
        );
    }

    #[test]
    fn private_key_jwt_assertions_follow_rfc_7523_and_are_unique() {
        let key = SigningKey::generate(crate::verify::Alg::ES256, "client-key").unwrap();
        let c = client(ClientAuth::PrivateKeyJwt(key));
        let endpoint = "https://idp.test/oauth/token";
        let first = credentials(&c, endpoint).unwrap();
        let second = credentials(&c, endpoint).unwrap();
        assert_eq!(first.authorization, None);
        let form = |creds: &Credentials, name: &str| {
            creds
                .form
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(form(&first, "client_id"), "kong gw");
        assert_eq!(form(&first, "client_assertion_type"), JWT_BEARER_ASSERTION);
        let claims = payload(&form(&first, "client_assertion"));
        assert_eq!(claims["iss"], "kong gw");
        assert_eq!(claims["sub"], "kong gw");
        assert_eq!(claims["aud"], endpoint);
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert!(exp > iat && exp - iat <= 60, "{claims}");
        let header = form(&first, "client_assertion");
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(header.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], "client-key");
        assert_ne!(
            claims["jti"],
            payload(&form(&second, "client_assertion"))["jti"],
            "a jti is never reused"
        );
    }
}
