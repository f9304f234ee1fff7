//! The client certificate a proxy passes on, for certificate-bound access tokens (RFC 8705
//! §3): its SHA-256 thumbprint over the DER, which a bound token names in `cnf.x5t#S256`.
//!
//! Proxies pass it in three shapes, all handled here: URL-encoded PEM (Envoy's
//! `attributes.source.certificate`, nginx `$ssl_client_escaped_cert`, the `Cert` of Envoy's
//! `x-forwarded-client-cert`), Traefik's `passTLSClientCert` (the base64 DER without the PEM
//! lines, URL-encoded, certificates of a chain comma-separated, the client's first), and the
//! hex SHA-256 `Hash` of `x-forwarded-client-cert`. Nothing is parsed beyond what the
//! thumbprint needs: the proxy verified (or, with `optional_no_ca`, only received) the
//! certificate; binding is about possession of its key, which the TLS handshake proved.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// Longest certificate text accepted (a chain of a few certificates).
const MAX_CERT_BYTES: usize = 64 * 1024;

/// A client certificate as a proxy described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCert {
    /// PEM or base64 DER, possibly URL-encoded; the first certificate is the client's.
    Encoded(String),
    /// The hex SHA-256 of the DER (`x-forwarded-client-cert`'s `Hash`).
    Sha256Hex(String),
}

impl ClientCert {
    /// The SHA-256 thumbprint of the certificate's DER, `None` when it cannot be read.
    pub fn thumbprint(&self) -> Option<[u8; 32]> {
        match self {
            ClientCert::Encoded(text) => {
                let der = der(text)?;
                Some(Sha256::digest(&der).into())
            }
            ClientCert::Sha256Hex(hex) => {
                let hex = hex.as_bytes();
                if hex.len() != 64 {
                    return None;
                }
                // Digit by digit: `u8::from_str_radix` would take a pair like "+d".
                let digit = |b: u8| {
                    char::from(b)
                        .to_digit(16)
                        .and_then(|d| u8::try_from(d).ok())
                };
                let mut out = [0u8; 32];
                for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
                    *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
                }
                Some(out)
            }
        }
    }

    /// Whether this is the certificate `x5t_s256` (a token's `cnf.x5t#S256`, base64url) names.
    pub fn matches(&self, x5t_s256: &str) -> bool {
        match (self.thumbprint(), URL_SAFE_NO_PAD.decode(x5t_s256)) {
            (Some(thumbprint), Ok(named)) => named.as_slice() == thumbprint.as_slice(),
            _ => false,
        }
    }

    /// The certificate in Envoy's `x-forwarded-client-cert`: its last element (the one the
    /// nearest Envoy added), by `Cert` when present, else by `Hash`.
    pub fn from_xfcc(value: &str) -> Option<Self> {
        let element = split_outside_quotes(value, ',').into_iter().next_back()?;
        let mut hash = None;
        for pair in split_outside_quotes(element, ';') {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "cert" if !value.is_empty() => {
                    return Some(ClientCert::Encoded(value.to_owned()));
                }
                "hash" if !value.is_empty() => hash = Some(ClientCert::Sha256Hex(value.to_owned())),
                _ => {}
            }
        }
        hash
    }
}

/// Splits at `separator` where it is not inside double quotes (XFCC quotes values that hold
/// `,`, `;` or `=`).
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in text.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == separator && !quoted {
            parts.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&text[start..]);
    parts
}

/// The DER of the first certificate in `text` (PEM or bare base64, URL-encoded or not).
fn der(text: &str) -> Option<Vec<u8>> {
    if text.len() > MAX_CERT_BYTES {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()?;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let body = match decoded.find(BEGIN) {
        Some(start) => {
            let rest = &decoded[start + BEGIN.len()..];
            &rest[..rest.find(END)?]
        }
        // Traefik: base64 DER without the PEM lines; a chain is comma-separated.
        None => decoded.split(',').next()?,
    };
    let base64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD.decode(base64).ok()?;
    // A DER certificate is a SEQUENCE; anything else is not one.
    (der.first() == Some(&0x30) && der.len() > 2).then_some(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DER-shaped blob (a SEQUENCE) standing in for a certificate: only its bytes matter.
    const DER: &[u8] = &[0x30, 0x05, 0x02, 0x01, 0x07, 0x05, 0x00];

    fn pem() -> String {
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            STANDARD.encode(DER)
        )
    }

    fn x5t() -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(DER))
    }

    fn url_encode(text: &str) -> String {
        percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    #[test]
    fn every_shape_a_proxy_sends_gives_the_same_thumbprint() {
        let second = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            STANDARD.encode([0x30, 0x01, 0x00, 0x00])
        );
        let shapes = [
            pem(),
            url_encode(&pem()),
            url_encode(&format!("{}{second}", pem())),
            // Traefik passTLSClientCert: base64 DER, URL-encoded, chain comma-separated.
            url_encode(&format!(
                "{},{}",
                STANDARD.encode(DER),
                STANDARD.encode([0x30, 1, 0])
            )),
        ];
        for shape in shapes {
            let cert = ClientCert::Encoded(shape.clone());
            assert!(cert.matches(&x5t()), "{shape}");
        }
    }

    #[test]
    fn xfcc_gives_the_last_elements_cert_or_hash() {
        let hash = hex(&Sha256::digest(DER));
        let xfcc = format!(
            "By=spiffe://a;Hash=00;Cert=\"{}\",By=spiffe://b;Hash={hash};Subject=\"CN=x,O=y\";Cert=\"{}\"",
            url_encode("garbage"),
            url_encode(&pem())
        );
        let cert = ClientCert::from_xfcc(&xfcc).unwrap();
        assert!(cert.matches(&x5t()));
        let only_hash = format!("By=spiffe://b;Hash={hash};Subject=\"CN=x;O=y\"");
        let cert = ClientCert::from_xfcc(&only_hash).unwrap();
        assert_eq!(cert, ClientCert::Sha256Hex(hash.clone()));
        assert!(cert.matches(&x5t()));
        assert_eq!(
            ClientCert::from_xfcc("By=spiffe://b;Subject=\"CN=x\""),
            None
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn anything_else_matches_nothing() {
        let other = URL_SAFE_NO_PAD.encode(Sha256::digest(b"other"));
        for cert in [
            ClientCert::Encoded(pem()),
            ClientCert::Sha256Hex(hex(&Sha256::digest(DER))),
        ] {
            assert!(!cert.matches(&other));
            assert!(!cert.matches("not base64url!"));
            assert!(!cert.matches(""));
        }
        for garbage in [
            "",
            "-----BEGIN CERTIFICATE-----\nAAAA",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----",
            "AAAA", // base64 of zeros: not a SEQUENCE
            "%FF%FE",
        ] {
            assert_eq!(
                ClientCert::Encoded(garbage.to_owned()).thumbprint(),
                None,
                "{garbage}"
            );
        }
        assert_eq!(ClientCert::Sha256Hex("zz".repeat(32)).thumbprint(), None);
        assert_eq!(ClientCert::Sha256Hex("ab".to_owned()).thumbprint(), None);
        // Found by the `credentials` fuzz target: a sign inside a pair is not a hex digit.
        let signed = format!("{}+d{}", "ab".repeat(20), "cd".repeat(11));
        assert_eq!(signed.len(), 64);
        assert_eq!(ClientCert::Sha256Hex(signed).thumbprint(), None);
        let huge = "A".repeat(MAX_CERT_BYTES + 1);
        assert_eq!(ClientCert::Encoded(huge).thumbprint(), None);
    }
}
