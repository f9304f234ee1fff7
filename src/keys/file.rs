//! Static keys from local files: a JWKS document or one PEM public key. Read once at start-up;
//! a file that yields no usable key is a configuration error.

use std::path::Path;

use jsonwebtoken::DecodingKey;

use super::jwk::{MAX_RSA_BITS, MIN_RSA_BITS, parse_jwks, rsa_bits};
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
            let bits = key
                .try_get_as_bytes()
                .ok()
                .and_then(pkcs1_modulus_bits)
                .ok_or_else(|| invalid(path, "cannot read the RSA modulus"))?;
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return Err(invalid(
                    path,
                    format!("RSA key of {bits} bits (accepted: {MIN_RSA_BITS} to {MAX_RSA_BITS})"),
                ));
            }
            (KeyKind::Rsa { bits }, key)
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

/// Reads one DER length at the start of `der`: `(length, bytes used)`.
fn der_length(der: &[u8]) -> Option<(usize, usize)> {
    let first = *der.first()?;
    if first < 0x80 {
        return Some((usize::from(first), 1));
    }
    let count = usize::from(first & 0x7f);
    if count == 0 || count > 4 || der.len() < 1 + count {
        return None;
    }
    let len = der[1..=count]
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    Some((len, 1 + count))
}

/// The modulus size of a PKCS#1 `RSAPublicKey` (`SEQUENCE { INTEGER n, INTEGER e }`).
fn pkcs1_modulus_bits(der: &[u8]) -> Option<usize> {
    let rest = der.strip_prefix(&[0x30])?;
    let (_, used) = der_length(rest)?;
    let rest = rest.get(used..)?.strip_prefix(&[0x02])?;
    let (len, used) = der_length(rest)?;
    let n = rest.get(used..used + len)?;
    let start = n.iter().position(|&b| b != 0).unwrap_or(n.len());
    Some(rsa_bits(&n[start..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_modulus_size_is_read_from_pkcs1_der() {
        // SEQUENCE { INTEGER (0x00 + 256 bytes with the top bit set), INTEGER 65537 }
        let mut der = vec![0x30, 0x82, 0x01, 0x0a, 0x02, 0x82, 0x01, 0x01, 0x00, 0xc0];
        der.extend(std::iter::repeat_n(0x11, 255));
        der.extend([0x02, 0x03, 0x01, 0x00, 0x01]);
        assert_eq!(pkcs1_modulus_bits(&der), Some(2048));
        let mut small = vec![0x30, 0x81, 0x89, 0x02, 0x81, 0x81, 0x00, 0xc0];
        small.extend(std::iter::repeat_n(0x11, 127));
        small.extend([0x02, 0x03, 0x01, 0x00, 0x01]);
        assert_eq!(pkcs1_modulus_bits(&small), Some(1024));
        assert_eq!(pkcs1_modulus_bits(&[0x30, 0x05]), None);
        assert_eq!(pkcs1_modulus_bits(&[]), None);
    }
}
