//! Verification keys: the [`KeySource`] trait the decision core asks, the [`KeySet`] of one
//! issuer, and JWK filtering. Sources: [`remote::RemoteKeys`] (discovery or a JWKS URL, cached
//! and refreshed) and [`file`] (static JWKS or PEM).

pub mod file;
pub mod jwk;
pub mod remote;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::DecodingKey;

use crate::verify::Alg;

/// The key material family, with what it needs to match an algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA with its modulus size in bits.
    Rsa {
        /// Modulus bits.
        bits: usize,
    },
    /// ECDSA on P-256.
    P256,
    /// ECDSA on P-384.
    P384,
    /// Ed25519.
    Ed25519,
}

impl KeyKind {
    /// Whether a key of this kind can verify `alg`.
    pub fn fits(self, alg: Alg) -> bool {
        matches!(
            (self, alg),
            (
                KeyKind::Rsa { .. },
                Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512
            ) | (KeyKind::P256, Alg::ES256)
                | (KeyKind::P384, Alg::ES384)
                | (KeyKind::Ed25519, Alg::EdDSA)
        )
    }
}

/// One public key usable for signature verification.
pub struct VerifyingKey {
    kid: Option<String>,
    kind: KeyKind,
    alg: Option<Alg>,
    key: DecodingKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// A key from its parts; `alg` is the key's own `alg` member, if it has one.
    pub fn new(kid: Option<String>, kind: KeyKind, alg: Option<Alg>, key: DecodingKey) -> Self {
        Self {
            kid,
            kind,
            alg,
            key,
        }
    }

    /// The key id.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The key family.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Whether this key may verify a token signed with `alg`: the family fits and the key's own
    /// `alg`, when it names one, is the same.
    pub fn supports(&self, alg: Alg) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|own| own == alg)
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

/// The keys of one issuer at one point in time.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Arc<VerifyingKey>>,
    /// kid -> index into `keys`, or `None` when the kid appears more than once (ambiguous).
    by_kid: HashMap<String, Option<usize>>,
}

impl KeySet {
    /// Builds a set; a kid that appears twice becomes ambiguous and matches nothing.
    pub fn new(keys: Vec<VerifyingKey>) -> Self {
        let keys: Vec<Arc<VerifyingKey>> = keys.into_iter().map(Arc::new).collect();
        let mut by_kid: HashMap<String, Option<usize>> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            if let Some(kid) = key.kid() {
                by_kid
                    .entry(kid.to_owned())
                    .and_modify(|slot| *slot = None)
                    .or_insert(Some(i));
            }
        }
        Self { keys, by_kid }
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys that may verify a token with this `kid` and `alg`.
    pub fn find(&self, kid: Option<&str>, alg: Alg) -> KeyLookup {
        match kid {
            Some(kid) => match self.by_kid.get(kid) {
                None => KeyLookup::UnknownKid,
                Some(None) => KeyLookup::AmbiguousKid,
                Some(Some(i)) => {
                    let key = &self.keys[*i];
                    if key.supports(alg) {
                        KeyLookup::Found(vec![Arc::clone(key)])
                    } else {
                        KeyLookup::AlgorithmMismatch
                    }
                }
            },
            None => {
                let candidates: Vec<_> = self
                    .keys
                    .iter()
                    .filter(|k| k.supports(alg))
                    .cloned()
                    .collect();
                if candidates.is_empty() {
                    KeyLookup::UnknownKid
                } else {
                    KeyLookup::Found(candidates)
                }
            }
        }
    }
}

/// The answer of a key source for one token.
#[derive(Debug)]
pub enum KeyLookup {
    /// Keys to try, in order (one when the token names a kid).
    Found(Vec<Arc<VerifyingKey>>),
    /// No key with this kid (after any refetch the cooldown allowed).
    UnknownKid,
    /// The kid names more than one key in the set.
    AmbiguousKid,
    /// The key exists but cannot verify the token's algorithm.
    AlgorithmMismatch,
    /// No usable key set: never loaded, or older than `max_stale`.
    Unavailable,
}

/// The state of a key source, for readiness and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHealth {
    /// Whether a key set is loaded and not past `max_stale`.
    pub usable: bool,
    /// Number of keys in the current set.
    pub keys: usize,
    /// Time since the current set was fetched (zero for static keys).
    pub age: Option<Duration>,
}

/// A boxed future, so that key sources can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the decision core gets an issuer's keys.
pub trait KeySource: Send + Sync + fmt::Debug {
    /// The keys for a token's `kid` and `alg`. May wait for a fetch; the caller bounds the wait.
    fn lookup<'a>(&'a self, kid: Option<&'a str>, alg: Alg) -> BoxFuture<'a, KeyLookup>;

    /// Current health, without waiting.
    fn health(&self) -> KeyHealth;

    /// The generation of the current key set, without waiting: it changes whenever the set's
    /// content does, and is `None` while no usable set is loaded (never, or past `max_stale`).
    /// A token verified under one generation needs no new signature check under the same one.
    fn generation(&self) -> Option<u64>;
}

/// A fixed key set: static files and unit tests.
#[derive(Debug)]
pub struct StaticKeys(KeySet);

impl StaticKeys {
    /// Wraps a key set.
    pub fn new(set: KeySet) -> Self {
        Self(set)
    }
}

impl KeySource for StaticKeys {
    fn lookup<'a>(&'a self, kid: Option<&'a str>, alg: Alg) -> BoxFuture<'a, KeyLookup> {
        let found = self.0.find(kid, alg);
        Box::pin(std::future::ready(found))
    }

    fn generation(&self) -> Option<u64> {
        Some(1)
    }

    fn health(&self) -> KeyHealth {
        KeyHealth {
            usable: !self.0.is_empty(),
            keys: self.0.len(),
            age: None,
        }
    }
}
