//! authgate: authentication decisions for reverse proxies.
//!
//! A proxy asks whether a request may pass; authgate finds the bearer token, verifies the JWT
//! against the issuer's published keys, checks its claims, and answers allow (with claim headers
//! for the upstream) or deny (with an RFC 6750 challenge).
//!
//! - [`config`]: YAML + env + flags -> validated [`config::Config`].
//! - [`decision`]: the one brain, `CheckRequest -> Decision`.
//! - [`deny`]: the one response table, deny kind x frontend -> every protocol's answer.
//! - [`token`], [`verify`], [`claims`]: finding, parsing and checking tokens.
//! - [`keys`]: the `KeySource` trait, the JWKS/discovery cache and static keys.
//! - [`http`], [`grpc`], [`admin`]: the HTTP and gRPC mouths and the admin port.
//! - [`server`]: the one bounded accept loop behind every port; [`shutdown`]: signals.
//! - [`telemetry`]: metric names, the only place that records them, and tracing.
//! - [`demo`]: the embedded OIDC issuer behind `authgate demo`.

pub mod admin;
pub mod cert;
pub mod claims;
pub mod config;
pub mod decision;
pub mod demo;
pub mod deny;
pub mod dpop;
pub mod exchange;
// Wrappers for the cargo-fuzz targets in fuzz/; not part of the supported API.
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod http;
pub mod introspect;
pub mod keys;
pub mod live;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod token;
pub mod verify;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::Health;
use crate::config::Config;
use crate::decision::{Decider, SystemClock, TrustedIssuer};
use crate::keys::file::KeyFileError;
pub use crate::live::{ConfigSource, KeyRegistry, Live};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which port.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A static key file is unusable.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// The embedded demo issuer could not start.
    #[error("demo issuer: {0}")]
    Demo(#[from] crate::demo::DemoError),
    /// The HTTP client for key fetches could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The bound listeners of one authgate process.
#[derive(Debug)]
pub struct Listeners {
    /// Forward-auth HTTP port.
    pub http: TcpListener,
    /// gRPC port (ext_authz, TokenService, health, reflection).
    pub grpc: TcpListener,
    /// Admin port.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the configured addresses.
    pub async fn bind(config: &Config) -> Result<Self, RunError> {
        let bind = |what: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Bind { what, addr, source })
        };
        Ok(Self {
            http: bind("http", config.listen.http).await?,
            grpc: bind("grpc", config.listen.grpc).await?,
            admin: bind("admin", config.listen.admin).await?,
        })
    }
}

/// Builds the key source of every issuer. Remote sources start fetching at once and stop when
/// `stop` turns true.
pub fn key_sources(
    config: &Config,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<TrustedIssuer>, RunError> {
    let mut registry = KeyRegistry::new(&config.keys)?;
    let issuers = registry.sources(config)?;
    let mut stop = stop.clone();
    tokio::spawn(async move {
        shutdown::until_true(&mut stop).await;
        drop(registry);
    });
    Ok(issuers)
}

/// Runs authgate on bound listeners until `shutdown` completes, then: readiness false at once,
/// keep serving for the grace period, close the listeners, drain within the bound.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    run_with_reload(config, listeners, shutdown, None).await
}

/// [`run`], and with a config source, live reload on SIGHUP and file changes (see [`live`]).
pub async fn run_with_reload(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
    source: Option<ConfigSource>,
) -> Result<(), RunError> {
    let handle = telemetry::metrics_handle();
    let config = Arc::new(config);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut registry = KeyRegistry::new(&config.keys)?;
    let issuers = registry.sources(&config)?;
    let decider = Arc::new(Live::new(Decider::new(
        Arc::clone(&config),
        issuers,
        Arc::new(SystemClock),
    )));
    telemetry::record_config_loaded();
    let reloader = match source {
        Some(source) => {
            tracing::info!(file = %source.path.display(), "reloading on SIGHUP and file changes");
            Some(tokio::spawn(live::watch(
                source,
                Arc::clone(&decider),
                registry,
                stop_rx.clone(),
            )))
        }
        None => {
            // The key sets stop with the service.
            let mut stop = stop_rx.clone();
            Some(tokio::spawn(async move {
                shutdown::until_true(&mut stop).await;
                drop(registry);
            }))
        }
    };
    let health = Arc::new(Health::default());

    let upkeep = {
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => handle.run_upkeep(),
                    () = shutdown::until_true(&mut stop) => return,
                }
            }
        })
    };

    let (close_tx, close_rx) = watch::channel(false);
    let stop = server::Stop {
        draining: health.draining(),
        close: close_rx,
        drain_timeout: config.shutdown.drain_timeout,
    };
    tracing::info!(
        http = ?listeners.http.local_addr().ok(),
        grpc = ?listeners.grpc.local_addr().ok(),
        admin = ?listeners.admin.local_addr().ok(),
        issuers = config.issuers.len(),
        "authgate serving"
    );
    let http_port = server::Port {
        name: "http",
        http2_only: false,
        max_header_bytes: config.limits.max_header_bytes,
    };
    let admin_port = server::Port {
        name: "admin",
        ..http_port
    };
    let http_server = tokio::spawn({
        let (router, limits, stop) = (
            http::mouth(Arc::clone(&decider)),
            config.limits.clone(),
            stop.clone(),
        );
        async move { server::serve(http_port, listeners.http, router, &limits, stop).await }
    });
    let grpc_server = tokio::spawn(grpc::serve(
        listeners.grpc,
        Arc::clone(&decider),
        Arc::clone(&health),
        stop.clone(),
    ));
    let admin_server = tokio::spawn({
        let (router, limits) = (
            admin::router(Arc::clone(&decider), Arc::clone(&health)),
            config.limits.clone(),
        );
        async move { server::serve(admin_port, listeners.admin, router, &limits, stop).await }
    });

    shutdown.await;
    health.start_draining();
    tracing::info!(grace = ?config.shutdown.grace, "shutting down: not ready, still serving");
    tokio::time::sleep(config.shutdown.grace).await;
    let _ = close_tx.send(true);
    let _ = http_server.await;
    let _ = grpc_server.await;
    let _ = admin_server.await;
    let _ = stop_tx.send(true);
    let _ = upkeep.await;
    if let Some(reloader) = reloader {
        let _ = reloader.await;
    }
    tracing::info!("authgate stopped");
    Ok(())
}
