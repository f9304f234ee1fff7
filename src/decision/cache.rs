//! The verified-token cache: what a token left behind once its signature, issuer, algorithm,
//! type and claim types were checked, keyed by the SHA-256 of its exact bytes. A repeated token
//! is answered from here before any parsing; only what depends on the moment or the request runs
//! again (times, the route's issuers, audiences, scopes and claims, header removals), through the
//! same functions as a first check.
//!
//! An entry is used only while its issuer's key set has the generation that verified it (a key
//! set change forgets every entry of that issuer, a set past `max_stale` answers nothing), and
//! only within `verified_cache.ttl`; an expired token's entry is dropped when it is next seen.
//! The cache is bounded in bytes and in entries, and tokens over `max_token_bytes` are not kept.

use std::sync::Arc;

use quick_cache::Lifecycle;
use quick_cache::sync::Cache;
use sha2::{Digest, Sha256};

use crate::config::VerifiedCacheConfig;
use crate::telemetry;

/// A token's times, in seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Times {
    /// `exp`.
    pub(crate) exp: i64,
    /// `nbf`, if present.
    pub(crate) nbf: Option<i64>,
    /// `iat`, if present.
    pub(crate) iat: Option<i64>,
}

/// Strings back to back in one buffer, in a fixed number of groups (two allocations however
/// many strings): `group(g)` gives the strings of group `g` in the order they were pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Texts {
    buf: Box<str>,
    /// The first `groups` entries: how many strings groups `0..=g` hold together; then the end of
    /// every string in `buf`.
    index: Box<[u32]>,
    groups: u16,
}

impl Texts {
    /// The strings of group `g` (empty for a group past the last).
    pub(crate) fn group(&self, g: usize) -> impl Iterator<Item = &str> + Clone + '_ {
        let groups = usize::from(self.groups);
        let count_before = |g: usize| match g {
            0 => 0,
            g => self.index.get(g - 1).map_or(0, |&n| n as usize),
        };
        let (first, last) = if g < groups {
            (count_before(g), count_before(g + 1))
        } else {
            (0, 0)
        };
        (first..last).map(move |i| {
            let start = match i {
                0 => 0,
                i => self.index[groups + i - 1] as usize,
            };
            let end = self.index[groups + i] as usize;
            self.buf.get(start..end).unwrap_or("")
        })
    }

    /// Bytes held on the heap.
    fn heap_bytes(&self) -> usize {
        self.buf.len() + self.index.len() * size_of::<u32>()
    }
}

/// Builds [`Texts`] group by group.
#[derive(Debug, Default)]
pub(crate) struct TextsBuilder {
    buf: String,
    group_counts: Vec<u32>,
    ends: Vec<u32>,
}

impl TextsBuilder {
    /// Adds a string to the current group.
    pub(crate) fn push(&mut self, text: &str) {
        self.buf.push_str(text);
        self.ends
            .push(u32::try_from(self.buf.len()).unwrap_or(u32::MAX));
    }

    /// Closes the current group.
    pub(crate) fn end_group(&mut self) {
        self.group_counts
            .push(u32::try_from(self.ends.len()).unwrap_or(u32::MAX));
    }

    /// The finished strings.
    pub(crate) fn build(self) -> Texts {
        let groups = u16::try_from(self.group_counts.len()).unwrap_or(u16::MAX);
        let mut index = self.group_counts;
        index.extend(self.ends);
        Texts {
            buf: self.buf.into_boxed_str(),
            index: index.into_boxed_slice(),
            groups,
        }
    }
}

/// The groups of a [`VerifiedToken`]'s texts; claim-rule values follow from `CLAIMS` on, one
/// group per claim path that a rule looks at.
pub(crate) mod group {
    /// `sub` (none when absent or not a string).
    pub(crate) const SUBJECT: usize = 0;
    /// `aud` values.
    pub(crate) const AUDIENCES: usize = 1;
    /// Granted scopes (`scope` and `scp`).
    pub(crate) const SCOPES: usize = 2;
    /// Encoded claim header values, one per bit set in `headers_present`.
    pub(crate) const HEADERS: usize = 3;
    /// `cnf.x5t#S256`, the certificate the token is bound to (none when unbound).
    pub(crate) const X5T: usize = 4;
    /// The payload segment (base64url), where `payload_header` is on and it fits.
    pub(crate) const PAYLOAD: usize = 5;
    /// `cnf.jkt`, the DPoP key the token is bound to (none when unbound).
    pub(crate) const JKT: usize = 6;
    /// The first claim path group.
    pub(crate) const CLAIMS: usize = 7;
}

/// A token whose signature, issuer, algorithm, type and claim types were verified: everything
/// any later check of the same token reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifiedToken {
    /// Index of its issuer in the decider's list.
    pub(crate) issuer: usize,
    /// The generation of the issuer's key set that verified it.
    pub(crate) generation: u64,
    /// When it was verified (seconds since the epoch).
    pub(crate) verified_at: i64,
    /// `exp`, `nbf`, `iat`.
    pub(crate) times: Times,
    /// Bit `i`: claim header `i` has a value (in the `HEADERS` group, in order).
    pub(crate) headers_present: u64,
    /// Bit `i`: claim header `i`'s value was left out (too long or not encodable).
    pub(crate) headers_rejected: u64,
    /// It came from an introspection answer (an opaque token), not a signature.
    pub(crate) introspected: bool,
    /// Subject, audiences, scopes, header values and claim-rule values (see [`group`]).
    pub(crate) texts: Texts,
}

impl VerifiedToken {
    /// `sub`, if it is a string.
    pub(crate) fn subject(&self) -> Option<&str> {
        self.texts.group(group::SUBJECT).next()
    }

    /// The `aud` values.
    pub(crate) fn audiences(&self) -> impl Iterator<Item = &str> + Clone + '_ {
        self.texts.group(group::AUDIENCES)
    }

    /// The granted scopes.
    pub(crate) fn scopes(&self) -> impl Iterator<Item = &str> + '_ {
        self.texts.group(group::SCOPES)
    }

    /// `cnf.x5t#S256`: the thumbprint of the certificate the token is bound to.
    pub(crate) fn x5t(&self) -> Option<&str> {
        self.texts.group(group::X5T).next()
    }

    /// `cnf.jkt`: the thumbprint of the DPoP key the token is bound to.
    pub(crate) fn jkt(&self) -> Option<&str> {
        self.texts.group(group::JKT).next()
    }

    /// The verified payload (base64url), where `payload_header` is on and it fits.
    pub(crate) fn payload(&self) -> Option<&str> {
        self.texts.group(group::PAYLOAD).next()
    }

    /// The scalar texts at claim path number `slot` (see `Decider::claim_paths`).
    pub(crate) fn claim_texts(&self, slot: usize) -> impl Iterator<Item = &str> + '_ {
        self.texts.group(group::CLAIMS + slot)
    }

    /// `(claim header index, encoded value)` for every claim header with a value.
    pub(crate) fn header_values(&self) -> impl Iterator<Item = (usize, &str)> + '_ {
        (0..64)
            .filter(|i| self.headers_present & (1 << i) != 0)
            .zip(self.texts.group(group::HEADERS))
    }

    /// The bytes this entry costs, for the cache's byte bound: the entry, its strings, and the
    /// cache's own slot with the allocator's rounding (about 120 bytes: measured with
    /// `examples/bench_cache_memory.rs`, whose RSS per token this estimate follows).
    fn cost(&self) -> u64 {
        const SLOT: usize = 120;
        let arc_counts = 2 * size_of::<usize>();
        (SLOT + arc_counts + size_of::<Self>() + self.texts.heap_bytes()) as u64
    }
}

/// Weighs an entry in bytes, and at least `floor` so that the byte bound also bounds the count.
#[derive(Debug, Clone)]
struct Weigh {
    floor: u64,
}

impl quick_cache::Weighter<u128, Arc<VerifiedToken>> for Weigh {
    fn weight(&self, _key: &u128, token: &Arc<VerifiedToken>) -> u64 {
        token.cost().max(self.floor)
    }
}

/// Counts evictions in the metrics.
#[derive(Debug, Clone, Default)]
struct CountEvictions;

impl Lifecycle<u128, Arc<VerifiedToken>> for CountEvictions {
    type RequestState = u64;

    fn begin_request(&self) -> Self::RequestState {
        0
    }

    fn on_evict(&self, evicted: &mut u64, _key: u128, _token: Arc<VerifiedToken>) {
        *evicted += 1;
    }

    fn end_request(&self, evicted: u64) {
        if evicted > 0 {
            telemetry::record_verified_cache_evictions(evicted);
        }
    }
}

/// The cache itself.
#[derive(Debug)]
pub(crate) struct VerifiedCache {
    entries:
        Cache<u128, Arc<VerifiedToken>, Weigh, quick_cache::DefaultHashBuilder, CountEvictions>,
    max_token_bytes: usize,
    ttl_secs: i64,
}

impl VerifiedCache {
    /// A cache per `config`, `None` when it is turned off.
    pub(crate) fn new(config: &VerifiedCacheConfig) -> Option<Self> {
        if config.capacity == 0 || config.max_bytes == 0 {
            return None;
        }
        // Each entry weighs at least max_bytes / capacity: the total weight stays under
        // max_bytes, so the count stays under capacity too.
        let floor = (config.max_bytes / config.capacity).max(1);
        // A first guess of the entry count for the table's initial size; it grows as needed.
        let estimate = (config.max_bytes / 256).min(config.capacity).min(4096);
        let entries = Cache::with(
            usize::try_from(estimate).unwrap_or(4096),
            config.max_bytes,
            Weigh { floor },
            quick_cache::DefaultHashBuilder::default(),
            CountEvictions,
        );
        Some(Self {
            entries,
            max_token_bytes: config.max_token_bytes,
            ttl_secs: i64::try_from(config.ttl.as_secs()).unwrap_or(i64::MAX),
        })
    }

    /// The key of `token`: the first 128 bits of its SHA-256 (a second preimage of 128 bits is
    /// out of reach), `None` for a token too large to keep.
    pub(crate) fn key(&self, token: &str) -> Option<u128> {
        if token.len() > self.max_token_bytes {
            return None;
        }
        let digest = Sha256::digest(token.as_bytes());
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        Some(u128::from_le_bytes(first))
    }

    /// The entry for `key` if it is still good: verified within the TTL, and its issuer's key
    /// set still at the generation that verified it (`generation(issuer)`; `None` when the
    /// issuer has no usable set). A stale entry is removed.
    pub(crate) fn get(
        &self,
        key: u128,
        now: i64,
        generation: impl Fn(usize) -> Option<u64>,
    ) -> Option<Arc<VerifiedToken>> {
        let token = self.entries.get(&key)?;
        let fresh = now < token.verified_at.saturating_add(self.ttl_secs)
            && generation(token.issuer) == Some(token.generation);
        if fresh {
            Some(token)
        } else {
            self.entries.remove(&key);
            None
        }
    }

    /// Keeps `token` under `key`.
    pub(crate) fn insert(&self, key: u128, token: Arc<VerifiedToken>) {
        self.entries.insert(key, token);
    }

    /// Forgets `key` (an entry whose token expired).
    pub(crate) fn remove(&self, key: u128) {
        self.entries.remove(&key);
    }

    /// Entries and their weight in bytes, for the metrics.
    pub(crate) fn size(&self) -> (usize, u64) {
        (self.entries.len(), self.entries.weight())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_keep_groups_apart_including_empty_ones_and_empty_strings() {
        let mut b = TextsBuilder::default();
        b.push("alice");
        b.end_group();
        b.end_group();
        b.push("read");
        b.push("");
        b.push("write");
        b.end_group();
        let texts = b.build();
        assert_eq!(texts.group(0).collect::<Vec<_>>(), ["alice"]);
        assert_eq!(texts.group(1).count(), 0);
        assert_eq!(texts.group(2).collect::<Vec<_>>(), ["read", "", "write"]);
        assert_eq!(texts.group(3).count(), 0, "past the last group");
    }
}
