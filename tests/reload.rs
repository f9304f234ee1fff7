//! Live reload over real sockets: a changed file applies within seconds, an invalid one is
//! refused and the running config keeps serving, listener addresses cannot change, key sets of
//! unchanged issuers survive, and checks under load see no error while the config flips.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::app::{App, eventually};
use common::idp::TestIdp;
use common::metrics::metric;
use tokio::task::JoinSet;

struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    fn new(test: &str, yaml: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("authgate-reload-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = Self {
            path: dir.join("authgate.yaml"),
            dir,
        };
        file.write(yaml);
        file
    }

    /// Writes `yaml` as editors and Kubernetes do: a new file renamed into place.
    fn write(&self, yaml: &str) {
        let tmp = self.dir.join("authgate.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn yaml(idp: &TestIdp, routes: &str) -> String {
    format!(
        "issuers: [{{issuer: \"{}\"}}]\naudiences: [authgate-test]\nroutes:\n{routes}\n",
        idp.issuer()
    )
}

async fn status_at(app: &App, path: &str) -> u16 {
    app.client
        .get(app.url("/auth"))
        .header("x-forwarded-uri", path)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn reloads(metrics: &str, result: &str) -> f64 {
    metric(
        metrics,
        &format!("authgate_config_reloads_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_changed_file_applies_and_an_invalid_one_keeps_the_running_config() {
    let idp = TestIdp::start().await;
    let file = ConfigFile::new(
        "apply",
        &yaml(&idp, "  - {path_prefix: /open, action: anonymous}"),
    );
    let app = App::start_file(&file.path).await;
    assert!(app.wait_ready(Duration::from_secs(5)).await);
    assert_eq!(status_at(&app, "/open").await, 200);
    let fetches = idp.discovery_fetches();
    let before = app.metrics().await;

    file.write(&yaml(&idp, "  - {path_prefix: /open, action: deny}"));
    assert!(
        eventually(Duration::from_secs(5), || async {
            status_at(&app, "/open").await == 403
        })
        .await,
        "the stricter rule applies"
    );
    // A new key source would start its first fetch at once: give it the time to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = app.metrics().await;
    assert!(reloads(&after, "success") >= reloads(&before, "success") + 1.0);
    let stamp = metric(
        &after,
        "authgate_config_last_reload_success_timestamp_seconds",
    )
    .unwrap();
    assert!(stamp > 1.7e9, "{stamp}");
    assert_eq!(
        idp.discovery_fetches(),
        fetches,
        "the unchanged issuer's keys were kept"
    );

    // Invalid: refused, counted, the deny rule still serves.
    let failures = reloads(&after, "failure");
    file.write("issuers: [{issuer: not a url}]\n");
    assert!(
        eventually(Duration::from_secs(5), || async {
            reloads(&app.metrics().await, "failure") > failures
        })
        .await,
        "the failure is counted"
    );
    assert_eq!(status_at(&app, "/open").await, 403);

    // A listener address change is refused too.
    let failures = reloads(&app.metrics().await, "failure");
    file.write(&format!(
        "listen: {{http: \"127.0.0.1:1\"}}\n{}",
        yaml(&idp, "  - {path_prefix: /open, action: anonymous}")
    ));
    assert!(
        eventually(Duration::from_secs(5), || async {
            reloads(&app.metrics().await, "failure") > failures
        })
        .await
    );
    assert_eq!(
        status_at(&app, "/open").await,
        403,
        "still the running config"
    );
}

#[tokio::test]
async fn checks_under_load_see_no_error_while_the_config_flips() {
    let idp = TestIdp::start().await;
    let token = idp.mint(idp.valid_claims("alice"));
    let open = yaml(&idp, "  - {path_prefix: /open, action: anonymous}");
    let closed = yaml(&idp, "  - {path_prefix: /closed, action: deny}");
    let file = ConfigFile::new("load", &open);
    let app = App::start_file(&file.path).await;
    assert!(app.wait_ready(Duration::from_secs(5)).await);

    let mut load = JoinSet::new();
    for _ in 0..8 {
        let (client, url, token) = (app.client.clone(), app.url("/auth"), token.clone());
        load.spawn(async move {
            let mut statuses = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(9);
            while tokio::time::Instant::now() < deadline {
                let status = client
                    .get(&url)
                    .header("x-forwarded-uri", "/api")
                    .header("authorization", format!("Bearer {token}"))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                statuses.push(status);
            }
            statuses
        });
    }
    // Each content must stay two polls (the debounce) to apply: a flip every 2.5 s.
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        file.write(if round % 2 == 0 { &closed } else { &open });
    }
    let mut total = 0;
    while let Some(statuses) = load.join_next().await {
        let statuses = statuses.unwrap();
        total += statuses.len();
        assert!(
            statuses.iter().all(|&s| s == 200),
            "{:?}",
            statuses.iter().filter(|&&s| s != 200).collect::<Vec<_>>()
        );
    }
    assert!(total > 100, "{total} checks");
    assert!(reloads(&app.metrics().await, "success") >= 2.0);
}

#[tokio::test]
async fn a_dpop_proof_used_before_a_reload_is_still_used_after_it() {
    use authgate::demo::signing::SigningKey;
    use authgate::verify::Alg;
    use common::dpop;

    let idp = TestIdp::start().await;
    let config = |routes: &str| {
        format!(
            "issuers: [{{issuer: \"{}\", dpop: optional}}]\naudiences: [authgate-test]\nroutes:\n{routes}\n",
            idp.issuer()
        )
    };
    let file = ConfigFile::new("dpop", &config("  - {path_prefix: /a, action: anonymous}"));
    let app = App::start_file(&file.path).await;
    assert!(app.wait_ready(Duration::from_secs(5)).await);
    let key = SigningKey::generate(Alg::ES256, "client").unwrap();
    let token = dpop::bound_token(&idp, "alice", &key);
    let proof = dpop::proof(&key, "GET", "https://api.example.com/orders", &token);
    let check = || {
        app.client
            .get(app.url("/auth"))
            .header("X-Forwarded-Method", "GET")
            .header("X-Forwarded-Proto", "https")
            .header("X-Forwarded-Host", "api.example.com")
            .header("X-Forwarded-Uri", "/orders")
            .header("Authorization", format!("DPoP {token}"))
            .header("DPoP", &proof)
            .send()
    };
    assert_eq!(check().await.unwrap().status(), 200);
    file.write(&config("  - {path_prefix: /a, action: deny}"));
    assert!(
        eventually(Duration::from_secs(5), || async {
            status_at(&app, "/a").await == 403
        })
        .await,
        "reloaded"
    );
    assert_eq!(
        check().await.unwrap().status(),
        401,
        "replayed after the reload"
    );
}
