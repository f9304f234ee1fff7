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
//! The recent-tokens index in front of it holds at most `recent_slots` tokens (each at most
//! `max_token_bytes`) with their entries, which it may keep alive after the cache evicted them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwapOption;
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

/// A token in the recent-tokens index: its exact bytes, its key, and its entry. Its `Debug`
/// leaves the token out (never in a log).
struct Recent {
    token: Box<str>,
    key: u128,
    entry: Arc<VerifiedToken>,
    /// Answered from the index since it was put there (or since its last second chance).
    used: AtomicBool,
}

impl std::fmt::Debug for Recent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recent")
            .field("token_bytes", &self.token.len())
            .field("entry", &self.entry)
            .finish_non_exhaustive()
    }
}

/// What a lookup found.
#[derive(Debug)]
pub(crate) struct Lookup {
    /// The token's key, `None` for a token too large to keep.
    pub(crate) key: Option<u128>,
    /// Its entry, if it is there and still good.
    pub(crate) hit: Option<Arc<VerifiedToken>>,
}

/// The cache itself, and in front of it an index of recently seen tokens: a fixed number of
/// slots, each holding one token's exact bytes and its entry, the slot chosen by a fast keyed
/// hash. A repeated token is found there by comparing bytes (the hash only picks the slot, so a
/// collision costs a miss, never a wrong answer), without the SHA-256 of the key: about a
/// twentieth of a cache-hit check's CPU. Every entry it answers with passes the same freshness
/// test as the cache's.
#[derive(Debug)]
pub(crate) struct VerifiedCache {
    entries:
        Cache<u128, Arc<VerifiedToken>, Weigh, quick_cache::DefaultHashBuilder, CountEvictions>,
    recent: Box<[ArcSwapOption<Recent>]>,
    recent_hash: quick_cache::DefaultHashBuilder,
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
            recent: (0..config.recent_slots)
                .map(|_| ArcSwapOption::empty())
                .collect(),
            recent_hash: quick_cache::DefaultHashBuilder::default(),
            max_token_bytes: config.max_token_bytes,
            ttl_secs: i64::try_from(config.ttl.as_secs()).unwrap_or(i64::MAX),
        })
    }

    /// The key of `token`: the first 128 bits of its SHA-256 (a second preimage of 128 bits is
    /// out of reach).
    fn key(token: &str) -> u128 {
        let digest = Sha256::digest(token.as_bytes());
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        u128::from_le_bytes(first)
    }

    /// The recent-tokens slot of `token`, if there are slots.
    fn slot(&self, token: &str) -> Option<&ArcSwapOption<Recent>> {
        if self.recent.is_empty() {
            return None;
        }
        let hash = self.recent_hash.hash_one(token);
        // The remainder is below the slot count, which is a usize.
        #[allow(clippy::cast_possible_truncation, reason = "a remainder below a usize")]
        let index = (hash % self.recent.len() as u64) as usize;
        self.recent.get(index)
    }

    /// Whether `entry` may still answer: verified within the TTL, and its issuer's key set
    /// still at the generation that verified it (`generation(issuer)`; `None` when the issuer
    /// has no usable set).
    fn fresh(
        &self,
        entry: &VerifiedToken,
        now: i64,
        generation: &impl Fn(usize) -> Option<u64>,
    ) -> bool {
        now < entry.verified_at.saturating_add(self.ttl_secs)
            && generation(entry.issuer) == Some(entry.generation)
    }

    /// Looks `token` up: first in the recent-tokens index (its exact bytes), then by its key.
    /// An entry that is no longer good is removed from both.
    pub(crate) fn lookup(
        &self,
        token: &str,
        now: i64,
        generation: impl Fn(usize) -> Option<u64>,
    ) -> Lookup {
        if token.len() > self.max_token_bytes {
            return Lookup {
                key: None,
                hit: None,
            };
        }
        let slot = self.slot(token);
        if let Some(recent) = slot.map(ArcSwapOption::load)
            && let Some(recent) = recent.as_ref()
            && *recent.token == *token
        {
            let key = Some(recent.key);
            if self.fresh(&recent.entry, now, &generation) {
                if !recent.used.load(Ordering::Relaxed) {
                    recent.used.store(true, Ordering::Relaxed);
                }
                return Lookup {
                    key,
                    hit: Some(Arc::clone(&recent.entry)),
                };
            }
            self.remove(recent.key, token);
            return Lookup { key, hit: None };
        }
        let key = Self::key(token);
        let hit = self.entries.get(&key).and_then(|entry| {
            if self.fresh(&entry, now, &generation) {
                if let Some(slot) = slot {
                    Self::offer(slot, token, key, &entry);
                }
                Some(entry)
            } else {
                self.entries.remove(&key);
                None
            }
        });
        Lookup {
            key: Some(key),
            hit,
        }
    }

    /// Puts `token` in its slot, unless the token there was answered from it since it came
    /// (then that one gets a second chance instead): many tokens taking turns at one slot do not
    /// push out one that keeps coming back.
    fn offer(slot: &ArcSwapOption<Recent>, token: &str, key: u128, entry: &Arc<VerifiedToken>) {
        if let Some(current) = slot.load().as_ref()
            && current.used.swap(false, Ordering::Relaxed)
        {
            return;
        }
        slot.store(Some(Arc::new(Recent {
            token: token.into(),
            key,
            entry: Arc::clone(entry),
            used: AtomicBool::new(false),
        })));
    }

    /// Keeps `entry` for `token` under `key`.
    pub(crate) fn insert(&self, key: u128, token: &str, entry: Arc<VerifiedToken>) {
        if let Some(slot) = self.slot(token) {
            Self::offer(slot, token, key, &entry);
        }
        self.entries.insert(key, entry);
    }

    /// Forgets `token` (an entry whose token expired, or that is no longer good).
    pub(crate) fn remove(&self, key: u128, token: &str) {
        if let Some(slot) = self.slot(token) {
            // Only this token's slot content: another token may have taken the slot since.
            let current = slot.load();
            if current.as_ref().is_some_and(|r| *r.token == *token) {
                slot.compare_and_swap(&*current, None);
            }
        }
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

    fn config(recent_slots: usize) -> VerifiedCacheConfig {
        VerifiedCacheConfig {
            capacity: 100,
            max_bytes: 1 << 20,
            max_token_bytes: 64,
            ttl: std::time::Duration::from_secs(60),
            recent_slots,
        }
    }

    fn entry(issuer: usize, subject: &str) -> Arc<VerifiedToken> {
        let mut texts = TextsBuilder::default();
        texts.push(subject);
        texts.end_group();
        Arc::new(VerifiedToken {
            issuer,
            generation: 1,
            verified_at: 1000,
            times: Times {
                exp: 2000,
                nbf: None,
                iat: None,
            },
            headers_present: 0,
            headers_rejected: 0,
            introspected: false,
            texts: texts.build(),
        })
    }

    fn subject(lookup: &Lookup) -> Option<&str> {
        lookup.hit.as_ref().and_then(|e| e.subject())
    }

    #[test]
    fn the_recent_index_answers_only_the_exact_token_and_only_while_it_is_good() {
        // One slot: every token shares it, so only the byte comparison tells them apart.
        let cache = VerifiedCache::new(&config(1)).expect("on");
        let generation_1 = |_| Some(1);
        let key_a = VerifiedCache::key("token-a");
        cache.insert(key_a, "token-a", entry(0, "alice"));
        // From the index (and from the cache, the same way, for a token the index lost).
        let a = cache.lookup("token-a", 1001, generation_1);
        assert_eq!((a.key, subject(&a)), (Some(key_a), Some("alice")));
        let debug = format!("{cache:?}");
        assert!(
            debug.contains("alice") && !debug.contains("token-a"),
            "{debug}"
        );
        let b = cache.lookup("token-b", 1001, generation_1);
        assert_eq!(
            (b.key, subject(&b)),
            (Some(VerifiedCache::key("token-b")), None)
        );
        assert!(subject(&cache.lookup("token-a ", 1001, generation_1)).is_none());
        // The issuer's key set changed: not answered, and forgotten in both places.
        assert!(subject(&cache.lookup("token-a", 1001, |_| Some(2))).is_none());
        assert!(subject(&cache.lookup("token-a", 1001, generation_1)).is_none());
        assert_eq!(cache.size().0, 0);
        // Past the TTL (verified at 1000, ttl 60 s).
        cache.insert(key_a, "token-a", entry(0, "alice"));
        assert!(subject(&cache.lookup("token-a", 1060, generation_1)).is_none());
        // Too long to keep: no key, no hit.
        let long = "x".repeat(65);
        cache.insert(VerifiedCache::key(&long), &long, entry(0, "mallory"));
        let lookup = cache.lookup(&long, 1001, generation_1);
        assert_eq!((lookup.key, subject(&lookup)), (None, None));
    }

    #[test]
    fn a_token_that_keeps_coming_back_keeps_its_slot_for_a_second_chance() {
        let cache = VerifiedCache::new(&config(1)).expect("on");
        let generation_1 = |_| Some(1);
        cache.insert(VerifiedCache::key("hot"), "hot", entry(0, "hot"));
        assert!(subject(&cache.lookup("hot", 1001, generation_1)).is_some());
        // A cold token offered once: the hot one stays (and loses its mark).
        cache.insert(VerifiedCache::key("cold"), "cold", entry(0, "cold"));
        let in_slot = |c: &VerifiedCache| c.recent[0].load().as_ref().map(|r| r.token.to_string());
        assert_eq!(in_slot(&cache).as_deref(), Some("hot"));
        // Offered again (a cache hit), the cold token takes the slot; both stay answerable.
        assert!(subject(&cache.lookup("cold", 1001, generation_1)).is_some());
        assert_eq!(in_slot(&cache).as_deref(), Some("cold"));
        assert_eq!(
            subject(&cache.lookup("hot", 1001, generation_1)),
            Some("hot")
        );
    }

    #[test]
    fn without_recent_slots_the_cache_answers_by_key() {
        let cache = VerifiedCache::new(&config(0)).expect("on");
        cache.insert(VerifiedCache::key("t"), "t", entry(0, "alice"));
        assert_eq!(
            subject(&cache.lookup("t", 1001, |_| Some(1))),
            Some("alice")
        );
        cache.remove(VerifiedCache::key("t"), "t");
        assert!(subject(&cache.lookup("t", 1001, |_| Some(1))).is_none());
    }

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
