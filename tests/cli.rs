//! Tests of the real `authgate` binary: the exit codes and messages of `check-config` and
//! `serve`, a started service that cannot reach its issuer (live, not ready, fails closed, stops
//! on SIGTERM), and the `demo` walk-through exactly as its printed curl lines do it.
//!
//! Every child process is owned by a [`Running`] guard that kills it on drop, so a failed
//! assertion never leaves a process behind; every wait is bounded in count and time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_authgate");
/// sysexits EX_USAGE: what authgate exits with on a bad configuration.
const EXIT_CONFIG: i32 = 64;
/// Polling interval of every bounded wait below.
const POLL: Duration = Duration::from_millis(50);
/// Upper bound for a process to start answering, generous for loaded CI machines.
const START_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A scratch directory for one test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("authgate-cli-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary with an empty environment, so no `AUTHGATE_*` or `RUST_LOG` of the machine
/// running the tests leaks in.
fn authgate(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_clear().stdin(Stdio::null());
    cmd
}

/// A started child process, killed (and reaped) on drop unless it has already exited.
struct Running {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Running {
    /// Starts `cmd` with stdout and stderr going to files in `scratch` (files, not pipes: a
    /// full pipe could block the child while the test waits for it).
    fn start(mut cmd: Command, scratch: &Scratch, name: &str) -> Self {
        let stdout = scratch.path(&format!("{name}.stdout"));
        let stderr = scratch.path(&format!("{name}.stderr"));
        let child = cmd
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            stdout,
            stderr,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Panics (with its stderr) if the process has exited.
    fn assert_alive(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "authgate exited early with {status}; stderr:\n{}",
                self.stderr()
            );
        }
    }

    /// Waits for the exit, at most `timeout`, polling quickly at first (most commands here
    /// exit within milliseconds).
    fn wait_for_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "authgate still running after {timeout:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(pause);
            pause = (pause * 2).min(POLL);
        }
    }

    /// Sends SIGTERM through the `kill` utility (no libc/nix needed).
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a command that should finish on its own, bounded in time; returns status, stdout and
/// stderr.
fn run(cmd: Command, scratch: &Scratch, name: &str) -> (ExitStatus, String, String) {
    let mut running = Running::start(cmd, scratch, name);
    let status = running.wait_for_exit(Duration::from_secs(30));
    (status, running.stdout(), running.stderr())
}

/// `n` distinct loopback ports that were free a moment ago: bound on `127.0.0.1:0`, read, and
/// released together.
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    drop(listeners);
    ports.try_into().unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Polls `url` until it answers `want`, at most [`START_TIMEOUT`], checking that the process
/// is still alive between attempts.
async fn wait_for_status(process: &mut Running, url: &str, want: reqwest::StatusCode) {
    let client = client();
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        process.assert_alive();
        match client.get(url).send().await {
            Ok(r) if r.status() == want => return,
            Ok(r) => last = format!("status {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(POLL).await;
    }
    panic!(
        "{url} did not answer {want} within {START_TIMEOUT:?} (last: {last}); stderr:\n{}",
        process.stderr()
    );
}

fn example_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.example.yaml")
}

/// The stderr lines of a config error, each checked for the common prefix.
fn config_error_lines(stderr: &str) -> Vec<&str> {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    for line in &lines {
        assert!(
            line.starts_with("authgate: config error: "),
            "unexpected stderr line: {line}"
        );
    }
    lines
}

// ---------------------------------------------------------------------------------------------
// check-config
// ---------------------------------------------------------------------------------------------

#[test]
fn check_config_accepts_the_example_config_with_exit_0() {
    let scratch = Scratch::new("check-example");
    let example = example_config();
    let (status, stdout, stderr) = run(
        authgate(&["check-config", example.to_str().unwrap()]),
        &scratch,
        "check",
    );
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(stdout.contains("valid"), "{stdout}");
}

#[test]
fn check_config_accepts_the_readme_policy_example() {
    // The YAML block that follows the `<!-- example: policy -->` marker in README.md.
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let after = readme
        .split_once("<!-- example: policy -->")
        .expect("the policy example marker")
        .1;
    let block = after
        .split_once("```yaml\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .expect("a yaml block after the marker")
        .0;
    let scratch = Scratch::new("check-readme-policy");
    let file = scratch.file("policy.yaml", block);
    let (status, stdout, stderr) = run(
        authgate(&["check-config", file.to_str().unwrap()]),
        &scratch,
        "check",
    );
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(stdout.contains("2 issuer(s), 6 route(s)"), "{stdout}");
}

/// Runs `check-config` on `yaml`, expects exit 64, and returns stderr and its config-error lines.
fn check_config_rejects(name: &str, yaml: &str) -> (String, Vec<String>) {
    let scratch = Scratch::new(name);
    let file = scratch.file("bad.yaml", yaml);
    let (status, _, stderr) = run(
        authgate(&["check-config", file.to_str().unwrap()]),
        &scratch,
        "check",
    );
    assert_eq!(status.code(), Some(EXIT_CONFIG), "stderr:\n{stderr}");
    let lines = config_error_lines(&stderr)
        .into_iter()
        .map(str::to_owned)
        .collect();
    (stderr, lines)
}

#[test]
fn check_config_names_an_unknown_field_on_one_line_and_exits_64() {
    let (stderr, lines) = check_config_rejects(
        "check-unknown",
        "issuers: [{issuer: https://idp.example.com/realms/master}]\naudiences: [api]\nleway: 5s\n",
    );
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("leway"), "{stderr}");
}

#[test]
fn check_config_reports_every_bad_value_on_its_own_line_and_exits_64() {
    // No audience anywhere, an unparsable leeway and an unparsable shutdown grace.
    let (stderr, lines) = check_config_rejects(
        "check-values",
        "issuers: [{issuer: https://idp.example.com/realms/master}]\nleeway: soon\nshutdown: {grace: later}\n",
    );
    assert_eq!(lines.len(), 3, "{stderr}");
    for field in ["issuers[0].audiences: ", "leeway: ", "shutdown.grace: "] {
        let naming: Vec<_> = lines.iter().filter(|l| l.contains(field)).collect();
        assert_eq!(naming.len(), 1, "one line naming {field:?}:\n{stderr}");
    }
}

#[test]
fn check_config_refuses_a_claim_header_over_a_proxy_header_and_exits_64() {
    let (stderr, lines) = check_config_rejects(
        "check-reserved",
        "issuers: [{issuer: https://idp.example.com}]\naudiences: [api]\nclaim_headers:\n  - {claim: sub, header: X-Auth-Subject}\n  - {claim: email, header: X-Forwarded-User}\n  - {claim: name, header: X-Original-URI}\n  - {claim: role, header: X-Envoy-Auth-Headers-To-Remove}\n",
    );
    assert_eq!(lines.len(), 3, "{stderr}");
    for (i, line) in lines.iter().enumerate() {
        let field = format!("claim_headers[{}].header: ", i + 1);
        assert!(
            line.contains(&field) && line.contains("cannot carry a claim"),
            "{line}"
        );
    }
}

#[test]
fn check_config_of_a_missing_file_exits_64() {
    let scratch = Scratch::new("check-missing");
    let missing = scratch.path("does-not-exist.yaml");
    let (status, _, stderr) = run(
        authgate(&["check-config", missing.to_str().unwrap()]),
        &scratch,
        "check",
    );
    assert_eq!(status.code(), Some(EXIT_CONFIG), "stderr:\n{stderr}");
    assert!(stderr.contains("does-not-exist.yaml"), "{stderr}");
}

/// What the binary says about a probe field `zzz` placed at one level of the config.
enum Level {
    /// A section: these are its fields (from the binary's own "unknown field" message).
    Section(Vec<String>),
    /// A list: its items may be sections.
    List,
    /// A scalar or a list of scalars.
    Leaf,
}

/// One step into the config: a field name, and whether its value is a list of sections.
type Nesting = Vec<(String, bool)>;

/// YAML that puts `inner` at the level `nesting` leads to.
fn yaml_at(nesting: &[(String, bool)], inner: &str) -> String {
    nesting
        .iter()
        .rev()
        .fold(inner.to_owned(), |acc, (field, list)| {
            if *list {
                format!("{{{field}: [{acc}]}}")
            } else {
                format!("{{{field}: {acc}}}")
            }
        })
}

fn probe(scratch: &Scratch, nesting: &[(String, bool)]) -> Level {
    let yaml = yaml_at(nesting, "{zzz: 1}");
    let file = scratch.file("probe.yaml", &yaml);
    let (status, _, stderr) = run(
        authgate(&["check-config", file.to_str().unwrap()]),
        scratch,
        "probe",
    );
    assert_eq!(status.code(), Some(EXIT_CONFIG), "{yaml}: {stderr}");
    let Some((_, rest)) = stderr.split_once("unknown field `zzz`, expected one of ") else {
        return if stderr.contains("sequence") {
            Level::List
        } else {
            Level::Leaf
        };
    };
    let list = rest.split("  -->").next().unwrap_or(rest);
    let list = list.lines().next().unwrap_or(list);
    Level::Section(
        list.replace('`', "")
            .split(',')
            .flat_map(|part| part.split(" or "))
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .collect(),
    )
}

/// Whether `example` mentions `name:` as a YAML key, active or in a comment.
fn mentions_key(example: &str, name: &str) -> bool {
    let key = format!("{name}:");
    example.lines().any(|line| {
        line.split(|c: char| " {,#-[".contains(c))
            .any(|piece| piece == key)
    })
}

fn dotted(nesting: &[(String, bool)]) -> String {
    nesting
        .iter()
        .map(|(field, list)| {
            if *list {
                format!("{field}[]")
            } else {
                field.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[test]
fn the_example_config_mentions_every_field_the_binary_accepts() {
    let scratch = Scratch::new("example-fields");
    let example = std::fs::read_to_string(example_config()).unwrap();
    let mut seen = Vec::new();
    let mut missing = Vec::new();
    let mut sections: Vec<Nesting> = vec![Vec::new()];
    let mut probes = 0;
    while let Some(section) = sections.pop() {
        probes += 1;
        assert!(
            probes < 100,
            "too many config sections; is the probe looping?"
        );
        let Level::Section(fields) = probe(&scratch, &section) else {
            panic!("{} is not a section", dotted(&section));
        };
        for field in fields {
            let mut child = section.clone();
            child.push((field.clone(), false));
            seen.push(dotted(&child));
            if !mentions_key(&example, &field) {
                missing.push(dotted(&child));
            }
            // Nothing in the config nests deeper than routes[].require.claims[].
            if child.len() > 3 {
                continue;
            }
            match probe(&scratch, &child) {
                Level::Section(_) => sections.push(child),
                Level::List => {
                    child.last_mut().unwrap().1 = true;
                    if matches!(probe(&scratch, &child), Level::Section(_)) {
                        sections.push(child);
                    }
                }
                Level::Leaf => {}
            }
        }
    }
    // The probe itself works: it reaches the deepest fields.
    for deep in ["token.query.enabled", "routes[].require.claims[].one_of"] {
        assert!(
            seen.iter().any(|s| s == deep),
            "{deep} not found in {seen:?}"
        );
    }
    assert!(
        missing.is_empty(),
        "deploy/config.example.yaml does not document: {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// serve: configuration errors
// ---------------------------------------------------------------------------------------------

#[test]
fn serve_with_a_bad_flag_value_exits_64_naming_the_field() {
    let scratch = Scratch::new("serve-bad-flag");
    let cases: [(&[&str], &str); 3] = [
        (&["--http-listen", "nope"], "listen.http: "),
        (&["--admin-listen", "127.0.0.1"], "listen.admin: "),
        (&["--log-format", "xml"], "log.format: "),
    ];
    for (flags, field) in cases {
        let mut args = vec![
            "serve",
            "--issuer",
            "https://idp.example.com/realms/master",
            "--audience",
            "api",
        ];
        args.extend_from_slice(flags);
        let (status, _, stderr) = run(authgate(&args), &scratch, "serve");
        assert_eq!(
            status.code(),
            Some(EXIT_CONFIG),
            "{flags:?}; stderr:\n{stderr}"
        );
        let lines = config_error_lines(&stderr);
        assert_eq!(lines.len(), 1, "{flags:?}: {stderr}");
        assert!(lines[0].contains(field), "{flags:?}: {stderr}");
    }
}

#[test]
fn serve_without_any_issuer_exits_64() {
    let scratch = Scratch::new("serve-no-issuer");
    let (status, _, stderr) = run(authgate(&["serve"]), &scratch, "serve");
    assert_eq!(status.code(), Some(EXIT_CONFIG), "stderr:\n{stderr}");
    assert!(
        config_error_lines(&stderr)
            .iter()
            .any(|l| l.contains("issuers: ")),
        "{stderr}"
    );
}

#[test]
fn flags_beat_environment_which_beats_the_file() {
    let scratch = Scratch::new("serve-precedence");
    // An invalid log format at each level: the error names the value that won.
    let file = scratch.file(
        "config.yaml",
        "issuers: [{issuer: https://idp.example.com/realms/master}]\naudiences: [api]\nlog: {format: from-file}\n",
    );
    let file = file.to_str().unwrap();

    let (status, _, stderr) = run(authgate(&["serve", "--config", file]), &scratch, "file");
    assert_eq!(status.code(), Some(EXIT_CONFIG), "stderr:\n{stderr}");
    assert!(stderr.contains("\"from-file\""), "{stderr}");

    // AUTHGATE_CONFIG names the file; AUTHGATE_LOG_FORMAT overrides it.
    let mut env = authgate(&["serve"]);
    env.env("AUTHGATE_CONFIG", file)
        .env("AUTHGATE_LOG_FORMAT", "from-env");
    let (status, _, stderr) = run(env, &scratch, "env");
    assert_eq!(status.code(), Some(EXIT_CONFIG), "stderr:\n{stderr}");
    assert!(stderr.contains("\"from-env\""), "{stderr}");
    assert!(!stderr.contains("from-file"), "{stderr}");

    let mut flag = authgate(&["serve", "--log-format", "from-flag"]);
    flag.env("AUTHGATE_CONFIG", file)
        .env("AUTHGATE_LOG_FORMAT", "from-env");
    let (status, _, stderr) = run(flag, &scratch, "flag");
    assert_eq!(status.code(), Some(EXIT_CONFIG), "stderr:\n{stderr}");
    assert!(stderr.contains("\"from-flag\""), "{stderr}");
    assert!(!stderr.contains("from-env"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// serve: a running service
// ---------------------------------------------------------------------------------------------

/// A JWT that passes every cheap check for `issuer`/`audience` but carries a junk signature, so
/// deciding it needs the issuer's keys.
fn token_needing_keys(issuer: &str, audience: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"alg": "RS256", "typ": "at+jwt", "kid": "k1"});
    let claims = json!({"iss": issuer, "aud": audience, "sub": "john", "exp": now + 600});
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.AAAA", b64(&header), b64(&claims))
}

#[tokio::test]
async fn serve_stays_live_but_not_ready_and_fails_closed_when_the_issuer_is_unreachable() {
    let scratch = Scratch::new("serve-unreachable");
    // A port that was free a moment ago: nothing listens there, connections are refused.
    let [http, grpc, admin, closed] = free_ports::<4>();
    let config = scratch.file("config.yaml", "shutdown: {grace: 0s}\n");
    let issuer = format!("http://127.0.0.1:{closed}");
    let (http_addr, grpc_addr, admin_addr) = (
        format!("127.0.0.1:{http}"),
        format!("127.0.0.1:{grpc}"),
        format!("127.0.0.1:{admin}"),
    );
    let cmd = authgate(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--issuer",
        &issuer,
        "--audience",
        "api",
        "--http-listen",
        &http_addr,
        "--grpc-listen",
        &grpc_addr,
        "--admin-listen",
        &admin_addr,
        "--log-format",
        "json",
    ]);
    let mut process = Running::start(cmd, &scratch, "serve");

    // Live at once, whatever the IdP does.
    wait_for_status(
        &mut process,
        &format!("http://{admin_addr}/healthz"),
        reqwest::StatusCode::OK,
    )
    .await;
    // An unreachable IdP never crash-loops the process.
    tokio::time::sleep(Duration::from_secs(1)).await;
    process.assert_alive();

    let client = client();
    let ready = client
        .get(format!("http://{admin_addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let text = ready.text().await.unwrap();
    assert!(text.contains(&issuer), "{text}");
    assert!(text.contains("no usable key set"), "{text}");
    let health = client
        .get(format!("http://{admin_addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), reqwest::StatusCode::OK);

    // Without keys, a token that needs them is never allowed: 503 on /auth, 401 on the
    // fail-closed nginx profile, both with Retry-After.
    let token = token_needing_keys(&issuer, "api");
    let auth = client
        .get(format!("http://{http_addr}/auth"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(auth.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(auth.headers().contains_key("retry-after"));
    assert!(!auth.headers().contains_key("x-auth-subject"));
    let nginx = client
        .get(format!("http://{http_addr}/auth/nginx"))
        .bearer_auth(&token)
        .header("X-Original-URI", "/api/items")
        .send()
        .await
        .unwrap();
    assert_eq!(nginx.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert!(nginx.headers().contains_key("retry-after"));
    assert!(nginx.headers().contains_key("www-authenticate"));

    process.terminate();
    let status = process.wait_for_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}; stderr:\n{}", process.stderr());

    // --log-format json: one JSON object per line; and the token never reaches the log.
    let stderr = process.stderr();
    assert!(!stderr.trim().is_empty());
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let parsed: Result<Value, _> = serde_json::from_str(line);
        assert!(
            parsed.as_ref().is_ok_and(Value::is_object),
            "not a JSON log line: {line}"
        );
    }
    assert!(!stderr.contains(&token), "the token was logged:\n{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// demo
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn demo_serves_what_its_printed_curl_lines_promise_and_stops_on_sigterm() {
    let scratch = Scratch::new("demo");
    let [http, grpc, admin, issuer_port] = free_ports::<4>();
    let (http_addr, grpc_addr, admin_addr, issuer_addr) = (
        format!("127.0.0.1:{http}"),
        format!("127.0.0.1:{grpc}"),
        format!("127.0.0.1:{admin}"),
        format!("127.0.0.1:{issuer_port}"),
    );
    let cmd = authgate(&[
        "demo",
        "--http-listen",
        &http_addr,
        "--grpc-listen",
        &grpc_addr,
        "--admin-listen",
        &admin_addr,
        "--issuer-listen",
        &issuer_addr,
    ]);
    let mut process = Running::start(cmd, &scratch, "demo");
    wait_for_status(
        &mut process,
        &format!("http://{admin_addr}/readyz"),
        reqwest::StatusCode::OK,
    )
    .await;

    // The printed lines point at the addresses we gave.
    let printed = process.stdout();
    let token_url = format!("http://{issuer_addr}/token");
    let auth_url = format!("http://{http_addr}/auth");
    assert!(printed.contains(&token_url), "{printed}");
    assert!(printed.contains(&auth_url), "{printed}");
    assert!(
        printed.contains(
            "-u demo-client:demo-secret -d grant_type=password -d username=john -d password=doe"
        ),
        "{printed}"
    );

    let client = client();

    // 1. The password grant, as `curl -u demo-client:demo-secret -d ...` sends it.
    let response = client
        .post(&token_url)
        .basic_auth("demo-client", Some("demo-secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=password&username=john&password=doe")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    let token = body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();

    // 2. Allowed, with the subject for the upstream.
    let allowed = client
        .get(&auth_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), reqwest::StatusCode::OK);
    assert_eq!(allowed.headers()["x-auth-subject"], "john");
    assert_eq!(
        allowed.headers()["x-auth-issuer"],
        format!("http://{issuer_addr}").as_str()
    );

    // 3. Tampered signature: `${TOKEN%.*}.AAAA`.
    let (signed, _) = token.rsplit_once('.').unwrap();
    let tampered = client
        .get(&auth_url)
        .bearer_auth(format!("{signed}.AAAA"))
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), reqwest::StatusCode::UNAUTHORIZED);
    let challenge = tampered.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(!tampered.headers().contains_key("x-auth-subject"));

    // 4. No token: a bare challenge.
    let anonymous = client.get(&auth_url).send().await.unwrap();
    assert_eq!(anonymous.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Bearer realm=\"authgate\""
    );

    // 5. The nginx and Envoy HTTP profiles, readiness and metrics.
    let nginx = client
        .get(format!("http://{http_addr}/auth/nginx"))
        .bearer_auth(&token)
        .header("X-Original-URI", "/api/items")
        .send()
        .await
        .unwrap();
    assert_eq!(nginx.status(), reqwest::StatusCode::OK);
    assert_eq!(nginx.headers()["x-auth-subject"], "john");
    let envoy = client
        .get(format!("http://{http_addr}/envoy/api/items"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(envoy.status(), reqwest::StatusCode::OK);
    assert_eq!(envoy.headers()["x-auth-subject"], "john");
    let metrics = client
        .get(format!("http://{admin_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let decisions: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("authgate_decisions_total{"))
        .collect();
    for reason in ["valid_token", "bad_signature", "missing_token"] {
        assert!(
            decisions
                .iter()
                .any(|l| l.contains(&format!("reason=\"{reason}\""))),
            "no decision with reason {reason}:\n{metrics}"
        );
    }

    process.terminate();
    // Bounded generously: the demo may or may not keep a shutdown grace period.
    let status = process.wait_for_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}; stderr:\n{}", process.stderr());
    let stderr = process.stderr();
    assert!(!stderr.contains(&token), "the token was logged:\n{stderr}");
}

#[tokio::test]
async fn serve_reloads_its_config_file_on_sighup_at_once() {
    let scratch = Scratch::new("serve-sighup");
    let [http, grpc, admin, closed] = free_ports::<4>();
    let config = |action: &str| {
        format!(
            "listen: {{http: \"127.0.0.1:{http}\", grpc: \"127.0.0.1:{grpc}\", admin: \"127.0.0.1:{admin}\"}}\n\
             issuers: [{{issuer: \"http://127.0.0.1:{closed}\"}}]\naudiences: [api]\n\
             shutdown: {{grace: 0s}}\nroutes: [{{path_prefix: /open, action: {action}}}]\n"
        )
    };
    let file = scratch.file("config.yaml", &config("anonymous"));
    let mut process = Running::start(
        authgate(&["serve", "--config", file.to_str().unwrap()]),
        &scratch,
        "serve",
    );
    let admin_addr = format!("127.0.0.1:{admin}");
    wait_for_status(
        &mut process,
        &format!("http://{admin_addr}/healthz"),
        reqwest::StatusCode::OK,
    )
    .await;
    let client = client();
    let open = || {
        client
            .get(format!("http://127.0.0.1:{http}/auth"))
            .header("x-forwarded-uri", "/open")
            .send()
    };
    assert_eq!(open().await.unwrap().status(), reqwest::StatusCode::OK);

    std::fs::write(&file, config("deny")).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &process.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    // Polling needs two looks a second apart: only the signal applies it this soon.
    let started = std::time::Instant::now();
    let mut denied = false;
    while started.elapsed() < Duration::from_millis(700) {
        if open().await.unwrap().status() == reqwest::StatusCode::FORBIDDEN {
            denied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(denied, "SIGHUP applied the new rule");
    process.assert_alive();
    assert!(
        process.stderr().contains("config reloaded"),
        "{}",
        process.stderr()
    );
}
