//! Live configuration: the decider that serves now, swapped whole on reload.
//!
//! Every check takes the current decider once, at its start ([`Live::get`]), and finishes on it:
//! a reload never changes the config under a check in flight, and never makes one wait. A
//! reload builds a new decider from the file (validated first; an invalid file keeps the old
//! config, one log line per problem), keeping the key sets of issuers whose key settings did not
//! change ([`KeyRegistry`]) and stopping those of removed ones. The verified-token cache and the
//! password-grant cache belong to a decider, so nothing a new config forbids is answered from
//! them; the DPoP replay cache is carried over (a used proof stays used). Listener addresses cannot change without a restart: such a file is refused.
//!
//! A reload is asked for by SIGHUP or by a change of the file's content, polled every
//! [`POLL_INTERVAL`] and applied once two polls agree (a debounce against half-written files).
//! The content is compared, not the modification time, so a rename into place (editors,
//! Kubernetes ConfigMaps behind a symlink) counts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::config::{Config, ConfigError, IssuerConfig, KeyCacheConfig, KeySourceConfig};
use crate::decision::{Decider, SystemClock, TrustedIssuer};
use crate::keys::file::{load_jwks_file, load_pem_file};
use crate::keys::remote::{RemoteKeys, http_client};
use crate::keys::{KeySource, StaticKeys};
use crate::shutdown::until_true;
use crate::{RunError, telemetry};

/// How often the config file is looked at.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The decider that serves now.
#[derive(Debug)]
pub struct Live {
    current: ArcSwap<Decider>,
}

impl Live {
    /// Serves `decider`.
    pub fn new(decider: Decider) -> Self {
        Self {
            current: ArcSwap::from_pointee(decider),
        }
    }

    /// The decider to run one check (or one scrape) on, start to end.
    pub fn get(&self) -> Arc<Decider> {
        self.current.load_full()
    }

    fn set(&self, decider: Decider) {
        self.current.store(Arc::new(decider));
    }
}

/// How to build the config again: the file and the same environment and flags as at start.
pub struct ConfigSource {
    /// The file that is watched.
    pub path: PathBuf,
    /// Reads and validates it (with the overlays of the first load).
    pub load: Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>,
}

impl std::fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSource")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What identifies a fetched key set: an issuer's key settings and the fetch bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeySettings {
    issuer: String,
    source: KeySourceConfig,
    allow_http: bool,
    fetch: KeyCacheConfig,
}

impl KeySettings {
    fn of(issuer: &IssuerConfig, fetch: &KeyCacheConfig) -> Self {
        Self {
            issuer: issuer.issuer.clone(),
            source: issuer.source.clone(),
            allow_http: issuer.allow_http,
            fetch: fetch.clone(),
        }
    }
}

/// The fetched key sets, each with its own stop signal, kept across reloads while their
/// settings stay the same. Key files are read again at every build.
#[derive(Debug)]
pub struct KeyRegistry {
    client: reqwest::Client,
    remote: Vec<(KeySettings, Arc<dyn KeySource>, watch::Sender<bool>)>,
}

impl KeyRegistry {
    /// An empty registry; fetches use a client with `fetch`'s bounds.
    pub fn new(fetch: &KeyCacheConfig) -> Result<Self, RunError> {
        Ok(Self {
            client: http_client(fetch).map_err(RunError::Client)?,
            remote: Vec::new(),
        })
    }

    /// The key sources of `config`'s issuers: kept ones reused, new ones started; the sets no
    /// issuer uses any more are stopped and dropped.
    pub fn sources(&mut self, config: &Config) -> Result<Vec<TrustedIssuer>, RunError> {
        let mut kept = Vec::new();
        let mut issuers = Vec::with_capacity(config.issuers.len());
        for issuer in &config.issuers {
            let keys: Arc<dyn KeySource> = match &issuer.source {
                KeySourceConfig::Discovery | KeySourceConfig::JwksUri(_) => {
                    let settings = KeySettings::of(issuer, &config.keys);
                    let existing = self.remote.iter().position(|(s, _, _)| *s == settings);
                    let entry = match existing {
                        Some(i) => self.remote.swap_remove(i),
                        None => {
                            let (stop_tx, stop_rx) = watch::channel(false);
                            let keys: Arc<dyn KeySource> = Arc::new(RemoteKeys::start(
                                issuer.clone(),
                                config.keys.clone(),
                                self.client.clone(),
                                stop_rx,
                            ));
                            (settings, keys, stop_tx)
                        }
                    };
                    let keys = Arc::clone(&entry.1);
                    kept.push(entry);
                    keys
                }
                KeySourceConfig::JwksFile(path) => {
                    Arc::new(StaticKeys::new(load_jwks_file(path, config.keys.max_keys)?))
                }
                KeySourceConfig::PemFile { path, alg, kid } => {
                    Arc::new(StaticKeys::new(load_pem_file(path, *alg, kid.clone())?))
                }
            };
            issuers.push(TrustedIssuer {
                config: issuer.clone(),
                keys,
            });
        }
        // What is left was not asked for again.
        self.stop_all();
        self.remote = kept;
        Ok(issuers)
    }

    /// Stops every key set's refresher.
    pub fn stop_all(&mut self) {
        for (_, _, stop) in self.remote.drain(..) {
            let _ = stop.send(true);
        }
    }
}

impl Drop for KeyRegistry {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Why a new config was not taken.
fn refused(problem: &str) {
    tracing::error!(problem, "config reload refused; the running config stays");
    telemetry::record_config_reload(false);
}

/// Builds and installs the config from `source`, or keeps the running one and says why.
fn reload(source: &ConfigSource, live: &Live, keys: &mut KeyRegistry) {
    let config = match (source.load)() {
        Ok(config) => config,
        Err(error) => {
            for line in error.lines() {
                refused(&line);
            }
            return;
        }
    };
    let running = live.get();
    let old = &running.config().listen;
    for (field, was, now) in [
        ("listen.http", old.http, config.listen.http),
        ("listen.grpc", old.grpc, config.listen.grpc),
        ("listen.admin", old.admin, config.listen.admin),
    ] {
        if was != now {
            refused(&format!(
                "{field}: {now} differs from {was}; listener addresses change only with a restart"
            ));
            return;
        }
    }
    if running.config().http.envoy_prefix != config.http.envoy_prefix {
        refused(&format!(
            "http.envoy_prefix: {} differs from {}; the HTTP routes are set at start",
            config.http.envoy_prefix,
            running.config().http.envoy_prefix
        ));
        return;
    }
    // Read by the listeners when they start: a change waits for a restart, and says so.
    let (was, now) = (&running.config().limits, &config.limits);
    for (field, changed) in [
        (
            "limits.max_connections",
            was.max_connections != now.max_connections,
        ),
        (
            "limits.header_read_timeout",
            was.header_read_timeout != now.header_read_timeout,
        ),
        (
            "limits.max_header_bytes",
            was.max_header_bytes != now.max_header_bytes,
        ),
    ] {
        if changed {
            tracing::warn!(
                field,
                "changed in the file; takes effect at the next restart"
            );
        }
    }
    let issuers = match keys.sources(&config) {
        Ok(issuers) => issuers,
        Err(error) => {
            refused(&error.to_string());
            return;
        }
    };
    let (issuer_count, route_count) = (config.issuers.len(), config.routes.len());
    let mut decider = Decider::new(Arc::new(config), issuers, Arc::new(SystemClock));
    // A DPoP proof used before the reload stays used after it.
    decider.keep_dpop_replays(&running);
    live.set(decider);
    telemetry::record_config_reload(true);
    tracing::info!(
        issuers = issuer_count,
        routes = route_count,
        "config reloaded"
    );
}

/// The SHA-256 of the file's content, `None` while it cannot be read.
fn fingerprint(path: &PathBuf) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

/// Reloads on SIGHUP and on a change of the file, until `stop` turns true.
pub async fn watch(
    source: ConfigSource,
    live: Arc<Live>,
    mut keys: KeyRegistry,
    mut stop: watch::Receiver<bool>,
) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "no SIGHUP handler: reload on file change only");
            None
        }
    };
    let mut applied = fingerprint(&source.path);
    let mut seen = applied;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = fingerprint(&source.path);
                // Applied once two polls agree on a new content.
                if now.is_some() && now == seen && now != applied {
                    applied = now;
                    reload(&source, &live, &mut keys);
                }
                seen = now;
            }
            Some(()) = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                applied = fingerprint(&source.path);
                seen = applied;
                reload(&source, &live, &mut keys);
            }
            () = until_true(&mut stop) => break,
        }
    }
    keys.stop_all();
}
