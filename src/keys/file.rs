//! Static keys from local files: a JWKS document or one PEM public key. Read once at start-up;
//! a file that yields no usable key is a configuration error.

use std::path::Path;

use jsonwebtoken::DecodingKey;

use super::jwk::{MIN_RSA_BITS, parse_jwks};
use super::{KeyKind, KeySet, VerifyingKey};
use crate::verify::Alg;

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The content is not a usable JWKS or PEM key.
    #[error("{path}: {problem}")]
    Invalid {
        /// The path.
        path: String,
        /// What is wrong.
        problem: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    std::fs::read(path).map_err(|source| KeyFileError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn invalid(path: &Path, problem: impl Into<String>) -> KeyFileError {
    KeyFileError::Invalid {
        path: path.display().to_string(),
        problem: problem.into(),
    }
}

/// Loads a JWKS file; at least one key must be usable.
pub fn load_jwks_file(path: &Path, max_keys: usize) -> Result<KeySet, KeyFileError> {
    let body = read(path)?;
    let parsed = parse_jwks(&body, max_keys).map_err(|e| invalid(path, e.to_string()))?;
    if parsed.set.is_empty() {
        return Err(invalid(path, "no usable signing key in the JWKS"));
    }
    Ok(parsed.set)
}

/// Loads one PEM public key (SPKI `PUBLIC KEY`, or `RSA PUBLIC KEY`) for `alg`.
pub fn load_pem_file(path: &Path, alg: Alg, kid: Option<String>) -> Result<KeySet, KeyFileError> {
    let pem = read(path)?;
    let bad =
        |e: jsonwebtoken::errors::Error| invalid(path, format!("not a {alg} public key: {e}"));
    let (kind, key) = match alg {
        Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
            let key = DecodingKey::from_rsa_pem(&pem).map_err(bad)?;
            // The decoded DER holds the modulus; a rough size check keeps small keys out.
            let der_len = key.try_get_as_bytes().map(<[u8]>::len).unwrap_or(0);
            if der_len * 8 < MIN_RSA_BITS {
                return Err(invalid(path, "RSA key under 2048 bits"));
            }
            (KeyKind::Rsa { bits: der_len * 8 }, key)
        }
        Alg::ES256 => (KeyKind::P256, DecodingKey::from_ec_pem(&pem).map_err(bad)?),
        Alg::ES384 => (KeyKind::P384, DecodingKey::from_ec_pem(&pem).map_err(bad)?),
        Alg::EdDSA => (
            KeyKind::Ed25519,
            DecodingKey::from_ed_pem(&pem).map_err(bad)?,
        ),
    };
    Ok(KeySet::new(vec![VerifyingKey::new(
        kid,
        kind,
        Some(alg),
        key,
    )]))
}
