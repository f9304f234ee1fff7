//! The `authgate` command: `serve`, `check-config` and `demo`. A bad configuration prints one
//! line per problem and exits with 64 (EX_USAGE); everything else lives in the library.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use authgate::config::{self, ConfigError, Overrides, RawConfig};
use authgate::demo::issuer::{DemoIssuer, IssuerOptions};
use authgate::{Listeners, RunError, shutdown, telemetry};
use clap::{Args, Parser, Subcommand};

/// Exit code for a configuration error (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit code when the service cannot start (sysexits EX_UNAVAILABLE).
const EXIT_START: u8 = 69;

#[derive(Debug, Parser)]
#[command(
    name = "authgate",
    version,
    about = "Authentication decisions for reverse proxies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the forward-auth and admin endpoints.
    Serve(ServeArgs),
    /// Validate a config file: exit 0 when valid, 64 with one line per problem when not.
    CheckConfig {
        /// The YAML file.
        file: PathBuf,
    },
    /// Run an embedded OIDC issuer and authgate against it on loopback, and print curl lines.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// YAML config file (also AUTHGATE_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Trusted issuer URL; repeatable. Replaces the file's issuers.
    #[arg(long = "issuer")]
    issuers: Vec<String>,
    /// Required audience; repeatable (any of them must be in the token).
    #[arg(long = "audience")]
    audiences: Vec<String>,
    /// Forward-auth HTTP listen address (default 0.0.0.0:8080).
    #[arg(long)]
    http_listen: Option<String>,
    /// gRPC listen address (default 0.0.0.0:9001).
    #[arg(long)]
    grpc_listen: Option<String>,
    /// Admin listen address (default 0.0.0.0:9090).
    #[arg(long)]
    admin_listen: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
}

impl ServeArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            issuers: self.issuers.clone(),
            audiences: self.audiences.clone(),
            http_listen: self.http_listen.clone(),
            grpc_listen: self.grpc_listen.clone(),
            admin_listen: self.admin_listen.clone(),
            log_format: self.log_format.clone(),
        }
    }
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Forward-auth HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_listen: std::net::SocketAddr,
    /// gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:9001")]
    grpc_listen: std::net::SocketAddr,
    /// Admin listen address.
    #[arg(long, default_value = "127.0.0.1:9090")]
    admin_listen: std::net::SocketAddr,
    /// Demo issuer listen address.
    #[arg(long, default_value = "127.0.0.1:8180")]
    issuer_listen: std::net::SocketAddr,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
}

fn config_error(error: &ConfigError) -> ExitCode {
    for line in error.lines() {
        eprintln!("authgate: config error: {line}");
    }
    ExitCode::from(EXIT_CONFIG)
}

/// File, then `AUTHGATE_*` environment, then flags.
fn load(config_path: Option<&PathBuf>, flags: &Overrides) -> Result<config::Config, ConfigError> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let path = config_path
        .cloned()
        .or_else(|| env.get("AUTHGATE_CONFIG").map(PathBuf::from));
    let mut raw = match &path {
        Some(path) => config::read_file(path)?,
        None => RawConfig::default(),
    };
    Overrides::from_env(&env).apply(&mut raw);
    flags.apply(&mut raw);
    raw.validate()
}

fn main() -> ExitCode {
    // A panic's message may quote request bytes (a token): log where it happened, never what.
    // (The decision path turns its own panics into `internal_error` denies.)
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(%location, "panic (message withheld: it may quote request data)");
    }));
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => {
            // The file as `serve --config FILE` would run it: with the AUTHGATE_* environment.
            match load(Some(&file), &Overrides::default()) {
                Ok(cfg) => {
                    println!(
                        "{}: valid ({} issuer(s), {} route(s))",
                        file.display(),
                        cfg.issuers.len(),
                        cfg.routes.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => config_error(&e),
            }
        }
        Command::Serve(args) => {
            let config = match load(args.config.as_ref(), &args.overrides()) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            // With a file, reload it (with the same environment and flags) on SIGHUP or change.
            let path = args
                .config
                .clone()
                .or_else(|| std::env::var_os("AUTHGATE_CONFIG").map(PathBuf::from));
            let source = path.map(|path| {
                let flags = args.overrides();
                let file = path.clone();
                authgate::ConfigSource {
                    path,
                    load: Box::new(move || load(Some(&file), &flags)),
                }
            });
            runtime_main(async move {
                telemetry::init_tracing(config.log.format, &config.log.level);
                let listeners = Listeners::bind(&config).await?;
                authgate::run_with_reload(config, listeners, shutdown::signal(), source).await
            })
        }
        Command::Demo(args) => runtime_main(demo(args)),
    }
}

fn runtime_main(fut: impl Future<Output = Result<(), RunError>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("authgate: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_START);
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Config(e)) => config_error(&e),
        Err(e) => {
            eprintln!("authgate: {e}");
            ExitCode::from(EXIT_START)
        }
    }
}

async fn demo(args: DemoArgs) -> Result<(), RunError> {
    let bind = |what: &'static str, addr: std::net::SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Bind { what, addr, source })
    };
    let issuer_listener = bind("demo issuer", args.issuer_listen).await?;
    let listeners = Listeners {
        http: bind("http", args.http_listen).await?,
        grpc: bind("grpc", args.grpc_listen).await?,
        admin: bind("admin", args.admin_listen).await?,
    };
    let options = IssuerOptions::default();
    let audience = options.audience.clone();
    let issuer = DemoIssuer::start(issuer_listener, options).await?;
    let overrides = Overrides {
        issuers: vec![issuer.issuer_url().to_owned()],
        audiences: vec![audience],
        log_format: args.log_format,
        ..Overrides::default()
    };
    let mut raw = RawConfig::default();
    overrides.apply(&mut raw);
    // Ctrl-C on a demo should stop it at once; no load balancer needs a not-ready window here.
    raw.shutdown.grace = Some("0s".to_owned());
    let config = raw.validate()?;
    telemetry::init_tracing(config.log.format, &config.log.level);
    let http = listeners
        .http
        .local_addr()
        .map_err(|source| RunError::Bind {
            what: "http",
            addr: config.listen.http,
            source,
        })?;
    let admin = listeners
        .admin
        .local_addr()
        .map_err(|source| RunError::Bind {
            what: "admin",
            addr: config.listen.admin,
            source,
        })?;
    print_demo_help(issuer.issuer_url(), http, admin);
    let result = authgate::run(config, listeners, shutdown::signal()).await;
    issuer.shutdown().await;
    result
}

fn print_demo_help(issuer: &str, http: std::net::SocketAddr, admin: std::net::SocketAddr) {
    println!(
        r#"
authgate demo: an OIDC issuer at {issuer} and authgate at http://{http} (admin http://{admin}).
Paste these lines into another shell:

  # 1. Get an access token for the demo user john (password grant):
  TOKEN=$(curl -s -u demo-client:demo-secret -d grant_type=password -d username=john -d password=doe {issuer}/token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')

  # 2. Allowed: 200 with X-Auth-Subject: john
  curl -i -H "Authorization: Bearer $TOKEN" http://{http}/auth

  # 3. Tampered signature: 401 with WWW-Authenticate: Bearer ... error="invalid_token"
  curl -i -H "Authorization: Bearer ${{TOKEN%.*}}.AAAA" http://{http}/auth

  # 4. No token: 401 with a bare Bearer challenge
  curl -i http://{http}/auth

  # 5. The nginx and Envoy HTTP profiles, readiness and metrics:
  curl -i -H "Authorization: Bearer $TOKEN" -H "X-Original-URI: /api/items" http://{http}/auth/nginx
  curl -i -H "Authorization: Bearer $TOKEN" http://{http}/envoy/api/items
  curl -s http://{admin}/readyz; curl -s http://{admin}/metrics | grep authgate_decisions_total

Ctrl-C stops both.
"#
    );
}
