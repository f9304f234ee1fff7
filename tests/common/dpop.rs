//! A DPoP client (RFC 9449) for the tests: key thumbprints, tokens bound to a key, and proofs.

use authgate::demo::signing::SigningKey;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::idp::TestIdp;

/// Now, in seconds since the epoch.
pub(crate) fn now() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit i64")
}

/// The RFC 7638 thumbprint of `key`'s public JWK: what a bound token's `cnf.jkt` names.
pub(crate) fn jkt(key: &SigningKey) -> String {
    let jwk = key.public_jwk();
    authgate::dpop::thumbprint(jwk.as_object().expect("a JWK is an object")).expect("a thumbprint")
}

/// base64url(SHA-256(token)): a proof's `ath`.
pub(crate) fn ath(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// A token of `idp` for `subject` bound to `key` (`cnf.jkt`).
pub(crate) fn bound_token(idp: &TestIdp, subject: &str, key: &SigningKey) -> String {
    let mut claims = idp.valid_claims(subject);
    claims["cnf"] = json!({"jkt": jkt(key)});
    idp.mint(claims)
}

/// The header of a good proof signed by `key`: `typ`, `alg`, the public `jwk`.
pub(crate) fn proof_header(key: &SigningKey) -> Value {
    json!({"typ": "dpop+jwt", "alg": key.alg().as_str(), "jwk": key.public_jwk()})
}

/// The claims of a good proof for `htm htu` presenting `token`, with a random `jti`.
pub(crate) fn proof_claims(htm: &str, htu: &str, token: &str) -> Value {
    json!({
        "jti": format!("{:x}", fastrand::u128(..)),
        "htm": htm,
        "htu": htu,
        "iat": now(),
        "ath": ath(token),
    })
}

/// A good proof by `key` for `htm htu` presenting `token`.
pub(crate) fn proof(key: &SigningKey, htm: &str, htu: &str, token: &str) -> String {
    key.sign_with_header(&proof_header(key), &proof_claims(htm, htu, token))
        .expect("signs a proof")
}
