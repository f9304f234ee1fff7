//! The authgate app on bound `127.0.0.1:0` listeners, driven through `authgate::run` exactly as
//! the binary drives it, with a handle to stop it.

use std::net::SocketAddr;
use std::time::Duration;

use authgate::Listeners;
use authgate::config::{RawConfig, parse_yaml};
use tokio::net::TcpListener;

use super::idp::{TEST_AUDIENCE, TestIdp};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running authgate.
pub(crate) struct App {
    pub(crate) http: SocketAddr,
    pub(crate) grpc: SocketAddr,
    pub(crate) admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), authgate::RunError>>>,
    pub(crate) client: reqwest::Client,
}

impl App {
    /// Starts authgate with this YAML config (listen addresses are replaced by loopback ports;
    /// the shutdown grace defaults to zero so tests stop at once).
    pub(crate) async fn start(yaml: &str) -> App {
        let mut raw = parse_yaml(yaml).unwrap_or_else(|e| panic!("test config: {e}"));
        if raw.shutdown.grace.is_none() {
            raw.shutdown.grace = Some("0s".to_owned());
        }
        Self::start_raw(raw).await
    }

    pub(crate) async fn start_raw(raw: RawConfig) -> App {
        Self::start_with(raw, None).await
    }

    /// Starts authgate on the config in `path`, reloading it on change (as `serve --config`
    /// does); listen addresses are the test's own, as with [`App::start`].
    pub(crate) async fn start_file(path: &std::path::Path) -> App {
        let load_path = path.to_owned();
        let load = move || {
            let mut raw = authgate::config::read_file(&load_path)?;
            raw.shutdown.grace.get_or_insert_with(|| "0s".to_owned());
            raw.validate()
        };
        let raw = authgate::config::read_file(path).expect("test config file");
        let source = authgate::ConfigSource {
            path: path.to_owned(),
            load: Box::new(load),
        };
        let mut raw = raw;
        raw.shutdown.grace.get_or_insert_with(|| "0s".to_owned());
        Self::start_with(raw, Some(source)).await
    }

    async fn start_with(raw: RawConfig, source: Option<authgate::ConfigSource>) -> App {
        let config = raw
            .validate()
            .unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let (http_addr, admin_addr) = (http.local_addr().unwrap(), admin.local_addr().unwrap());
        let grpc_addr = grpc.local_addr().unwrap();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(authgate::run_with_reload(
            config,
            Listeners { http, grpc, admin },
            async move {
                let _ = stop_rx.await;
            },
            source,
        ));
        App {
            http: http_addr,
            grpc: grpc_addr,
            admin: admin_addr,
            stop: Some(stop_tx),
            task: Some(task),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        }
    }

    /// A test IdP and authgate trusting it (discovery, audience `authgate-test`), ready; `extra`
    /// is appended to the YAML.
    pub(crate) async fn with_idp(extra: &str) -> (TestIdp, App) {
        let idp = TestIdp::start().await;
        let app = App::start(&idp_config(&idp, extra)).await;
        assert!(app.wait_ready(Duration::from_secs(5)).await, "never ready");
        (idp, app)
    }

    /// A URL on the forward-auth port.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// A URL on the admin port.
    pub(crate) fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// A gRPC channel to the gRPC port. The listener is bound before `run` starts, so this
    /// connects at once; every call on it gives up after 5 s instead of hanging a test.
    pub(crate) async fn grpc_channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))
            .expect("grpc endpoint")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect to the grpc port")
    }

    /// Polls `/readyz` until it answers 200, for at most `limit`. Waits for the key fetch, not
    /// for the server: the listeners are bound before `run` starts.
    pub(crate) async fn wait_ready(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Ok(r) = self.client.get(self.admin_url("/readyz")).send().await
                && r.status() == 200
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// `/readyz` status code.
    pub(crate) async fn readyz(&self) -> u16 {
        self.client
            .get(self.admin_url("/readyz"))
            .send()
            .await
            .expect("readyz request")
            .status()
            .as_u16()
    }

    /// `/healthz` status code.
    pub(crate) async fn healthz(&self) -> u16 {
        self.client
            .get(self.admin_url("/healthz"))
            .send()
            .await
            .expect("healthz request")
            .status()
            .as_u16()
    }

    /// `GET /auth` with this bearer token (or none).
    pub(crate) async fn check(&self, token: Option<&str>) -> reqwest::Response {
        let mut req = self
            .client
            .get(self.url("/auth"))
            .header("X-Forwarded-Method", "GET")
            .header("X-Forwarded-Host", "api.example.com")
            .header("X-Forwarded-Uri", "/items");
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        req.send().await.expect("check request")
    }

    /// The `/metrics` text.
    pub(crate) async fn metrics(&self) -> String {
        // Once more on a transport error: a pooled keep-alive connection may have just been
        // closed by the server's idle timeout as the request went out (a scrape every few
        // seconds, as Prometheus does, meets the same race and retries too).
        let send = || self.client.get(self.admin_url("/metrics")).send();
        let response = match send().await {
            Ok(response) => response,
            Err(_) => send().await.expect("metrics"),
        };
        response.text().await.expect("metrics body")
    }

    /// Triggers shutdown and waits for `run` to return.
    pub(crate) async fn stop(mut self) {
        self.begin_stop();
        self.join().await.expect("run result");
    }

    /// Triggers shutdown (as SIGTERM would) without waiting; see [`App::join`].
    pub(crate) fn begin_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for `run` to return (after [`App::begin_stop`]) and hands back its result.
    pub(crate) async fn join(mut self) -> Result<(), authgate::RunError> {
        match self.task.take() {
            Some(task) => task.await.expect("run task"),
            None => Ok(()),
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The YAML of an authgate trusting `idp` (discovery, audience `authgate-test`), plus `extra`.
pub(crate) fn idp_config(idp: &TestIdp, extra: &str) -> String {
    format!(
        "issuers: [{{issuer: \"{}\"}}]\naudiences: [{TEST_AUDIENCE}]\n{extra}\n",
        idp.issuer()
    )
}

/// Calls `probe` every 20 ms until it returns `true`, for at most `limit`; returns whether it
/// did. For waiting on background work (a refresh, a retry), never on a server to start.
pub(crate) async fn eventually<F, Fut>(limit: Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if probe().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
