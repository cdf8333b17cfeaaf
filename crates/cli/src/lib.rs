//! The one binary. Each subcommand is a function here or in a module named for it; `main` only
//! parses and dispatches, and anyhow lives only at this edge.

pub mod audit;
pub mod client;
pub mod demo;
pub mod dev;
pub mod install_keys;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "signaalpoort",
    version,
    about = "Consent-checked signal exchange between agencies around one family, with a tamper-evident access log"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway with a configuration file.
    Serve {
        #[arg(
            long,
            short,
            env = "SIGNAALPOORT_CONFIG",
            default_value = "signaalpoort.toml"
        )]
        config: PathBuf,
    },
    /// Everything on this machine: dev PKI (if absent), config, gateway on SQLite, and the demo story.
    Dev(dev::DevArgs),
    /// Replay the 2015 scenario against a running gateway, as the example agencies.
    Demo(demo::DemoArgs),
    /// The development PKI.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Validate a configuration, its certificates and keys; says exactly what is wrong.
    CheckConfig {
        #[arg(
            long,
            short,
            env = "SIGNAALPOORT_CONFIG",
            default_value = "signaalpoort.toml"
        )]
        config: PathBuf,
    },
    /// Run database migrations and exit (replicas may also migrate on start).
    Migrate {
        /// sqlite://PATH or postgres://...; default: the config's database.
        #[arg(long)]
        database_url: Option<String>,
        #[arg(
            long,
            short,
            env = "SIGNAALPOORT_CONFIG",
            default_value = "signaalpoort.toml"
        )]
        config: PathBuf,
    },
    /// Move this deployment's SQLite database to an empty PostgreSQL database, access log included,
    /// and verify the chain there against the checkpoint key. Stop the gateway first.
    MoveToPostgres {
        #[arg(
            long,
            short,
            env = "SIGNAALPOORT_CONFIG",
            default_value = "signaalpoort.toml"
        )]
        config: PathBuf,
        /// The target, postgres://USER@HOST:5432/DB (empty; migrated by this command).
        #[arg(long)]
        to: String,
    },
    /// Exit 0 when the gateway's admin /readyz answers 200 (for container health checks).
    Healthcheck {
        #[arg(long, default_value = "127.0.0.1:7444")]
        admin: String,
    },
    /// Copy the key files of a mounted Secret into the key directory, owner-only (0700/0600): the
    /// Kubernetes initContainer step, with this image rather than a second one.
    InstallKeys {
        /// The mounted Secret (its `..data` entries are skipped).
        #[arg(long)]
        from: PathBuf,
        /// The key directory the gateway reads.
        #[arg(long)]
        to: PathBuf,
    },
    /// Print the policy table (Markdown), as the gateway runs it.
    Policy,
    /// Tools for security and privacy officers.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Run a witness (c2sp.org/tlog-witness) with your own key and state: cosigns the gateway's
    /// checkpoints when they extend what you saw, refuses rollbacks and split views.
    Witness(WitnessArgs),
}

#[derive(clap::Args, Debug)]
pub struct WitnessArgs {
    /// This witness's name, e.g. `fg.gemeente.example/witness` (no spaces, no '+').
    #[arg(long)]
    pub name: String,
    /// Its Ed25519 key (PKCS#8), created owner-only when absent.
    #[arg(long)]
    pub key: PathBuf,
    /// Where it remembers the newest checkpoint it cosigned per log.
    #[arg(long)]
    pub state: PathBuf,
    /// A log to witness: its verifier key (`origin+id+base64`, from `audit export` or the
    /// operator); repeatable.
    #[arg(long = "log")]
    pub logs: Vec<String>,
    #[arg(long, default_value = "127.0.0.1:7380")]
    pub listen: std::net::SocketAddr,
    /// Print this witness's verifier key (for the gateway's `audit.witnesses`) and exit.
    #[arg(long)]
    pub print_key: bool,
}

/// Builds a witness from its arguments (the key file is created when absent).
pub fn witness_options(
    args: &WitnessArgs,
) -> anyhow::Result<signaalpoort_server::witness::WitnessOptions> {
    let pkcs8 = signaalpoort_server::keys::load_or_create_raw(&args.key, || {
        signaalpoort_core::access_log::Ed25519FileSigner::generate_pkcs8()
            .map_err(|_| signaalpoort_server::keys::KeyError::Random)
    })?;
    let cosigner = signaalpoort_core::access_log::Cosigner::from_pkcs8(&args.name, &pkcs8)?;
    let mut logs = signaalpoort_core::access_log::witness::WitnessedLogs::default();
    for log in &args.logs {
        logs.add(log)?;
    }
    Ok(signaalpoort_server::witness::WitnessOptions {
        listen: args.listen,
        cosigner,
        logs,
        state_path: args.state.clone(),
    })
}

#[derive(Subcommand, Debug)]
pub enum PkiCommand {
    /// Generate a dev CA, a server certificate, one client certificate per example agency and the
    /// negative fixtures tests use. Keys are written with mode 0600 into a git-ignored folder.
    Init {
        #[arg(long, default_value = "certs/dev")]
        dir: PathBuf,
        /// Replace an existing PKI.
        #[arg(long)]
        force: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` logs as its configuration says (JSON in containers); everything else for a terminal.
    let json = match &cli.command {
        Command::Serve { config } => {
            signaalpoort_server::Config::load(config).is_ok_and(|c| c.server.log_json)
        }
        _ => false,
    };
    init_tracing(json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn init_tracing(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("SIGNAALPOORT_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn,hyper=warn")
        });
    // Colours only on a terminal: logs piped to a file or a collector stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let config = signaalpoort_server::Config::load(&config)?;
            serve_until_signal(config).await?;
        }
        Command::Dev(args) => dev::run(args).await?,
        Command::Demo(args) => demo::run_against(&args).await?,
        Command::Pki {
            command: PkiCommand::Init { dir, force },
        } => {
            dev::init_pki(&dir, force)?;
            println!(
                "dev PKI written to {} (git-ignored; never commit keys)",
                dir.display()
            );
        }
        Command::CheckConfig { config } => return check_config(&config),
        Command::Migrate {
            database_url,
            config,
        } => {
            let url = match database_url {
                Some(u) => u,
                None => signaalpoort_server::Config::load(&config)?.database_url(),
            };
            signaalpoort_store::Store::migrate(&url)
                .await
                .context("migrating")?;
            println!("migrations applied to {}", redact_url(&url));
        }
        Command::MoveToPostgres { config, to } => return move_to_postgres(&config, &to).await,
        Command::Healthcheck { admin } => return healthcheck(&admin).await,
        Command::InstallKeys { from, to } => {
            let names = install_keys::install_keys(&from, &to)?;
            println!(
                "installed {} into {} (0600)",
                names.join(", "),
                to.display()
            );
        }
        Command::Policy => print!("{}", signaalpoort_core::policy::policy_table_markdown()),
        Command::Audit { command } => return audit::run(command).await,
        Command::Witness(args) => {
            let options = witness_options(&args)?;
            if args.print_key {
                println!("{}", options.cosigner.public().verifier_key());
                return Ok(ExitCode::SUCCESS);
            }
            anyhow::ensure!(!args.logs.is_empty(), "give at least one --log to witness");
            let (tx, rx) = tokio::sync::watch::channel(false);
            let (addr, task) = signaalpoort_server::witness::serve(options, rx).await?;
            println!("witness {} listening on http://{addr}", args.name);
            wait_for_signal().await;
            let _ = tx.send(true);
            let _ = task.await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs until SIGTERM or Ctrl-C, then shuts down gracefully.
pub async fn serve_until_signal(config: signaalpoort_server::Config) -> anyhow::Result<()> {
    let running =
        signaalpoort_server::start(config, Arc::new(signaalpoort_server::SystemClock)).await?;
    wait_for_signal().await;
    running.shutdown().await;
    Ok(())
}

pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn check_config(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = match signaalpoort_server::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration {} is invalid:\n{e}", path.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    signaalpoort_tls::install_crypto_provider();
    let files = signaalpoort_tls::TlsFiles {
        cert_chain: config.tls.cert.clone(),
        private_key: config.tls.key.clone(),
        client_ca: config.tls.client_ca.clone(),
        crls: config.tls.crls.clone(),
    };
    if let Err(e) = signaalpoort_tls::ReloadableTls::load(files) {
        eprintln!("configuration {} is invalid:\ntls: {e}", path.display());
        return Ok(ExitCode::FAILURE);
    }
    for (what, p) in [
        (
            "pseudonym key",
            signaalpoort_server::keys::pseudonym_key_path(&config.server.data_dir),
        ),
        (
            "checkpoint key",
            signaalpoort_server::keys::checkpoint_key_path(&config.server.data_dir),
        ),
    ] {
        if p.exists() {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&p)?.permissions().mode();
                if mode & 0o077 != 0 {
                    eprintln!(
                        "{what} {} is readable by group or others (mode {:o}); run chmod 600",
                        p.display(),
                        mode & 0o777
                    );
                    return Ok(ExitCode::FAILURE);
                }
            }
        } else {
            println!(
                "note: {what} {} does not exist yet; it is created on first start",
                p.display()
            );
        }
    }
    println!(
        "configuration {} is valid: {} agencies, store {}, listening on {}",
        path.display(),
        config.agencies.len(),
        redact_url(&config.database_url()),
        config.server.listen
    );
    Ok(ExitCode::SUCCESS)
}

async fn move_to_postgres(config: &std::path::Path, to: &str) -> anyhow::Result<ExitCode> {
    let config = signaalpoort_server::Config::load(config)?;
    let from = config.database_url();
    let key_path = signaalpoort_server::keys::checkpoint_key_path(&config.server.data_dir);
    anyhow::ensure!(
        key_path.exists(),
        "no checkpoint key at {}: is this the data directory of the deployment?",
        key_path.display()
    );
    let signer = signaalpoort_server::keys::load_or_create_checkpoint_key(
        &key_path,
        &config.audit.log_origin,
    )?;
    let policy = signaalpoort_core::access_log::TrustPolicy {
        log_key: (&signer as &dyn signaalpoort_core::access_log::CheckpointSigner).verifier_key(),
        witnesses: Vec::new(),
        quorum: 0,
    };
    let report = signaalpoort_store::transfer::sqlite_to_postgres(&from, to).await?;
    for (table, rows) in &report.tables {
        println!("{table:<22} {rows:>10} rows");
    }
    let store =
        signaalpoort_store::Store::open(to, signaalpoort_store::StoreOptions::default()).await?;
    let verified = store.verify_log(&policy, None).await?;
    store.close().await;
    match &verified.first_problem {
        None => {
            println!(
                "moved to {}: access log of {} records verifies ({} checkpoints checked)",
                redact_url(to),
                verified.records,
                verified.checkpoints_checked
            );
            println!(
                "next: set server.database_url to the PostgreSQL URL; keep {} (the keys)",
                config.server.data_dir.join("keys").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(problem) => {
            eprintln!("moved, but the access log does NOT verify on the target: {problem}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

async fn healthcheck(admin: &str) -> anyhow::Result<ExitCode> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(admin).await?;
        stream
            .write_all(
                format!("GET /readyz HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), attempt).await {
        Ok(Ok(response)) if response.starts_with(b"HTTP/1.1 200") => Ok(ExitCode::SUCCESS),
        Ok(Ok(response)) => {
            eprintln!(
                "not ready: {}",
                String::from_utf8_lossy(&response)
                    .lines()
                    .last()
                    .unwrap_or_default()
            );
            Ok(ExitCode::FAILURE)
        }
        Ok(Err(e)) => {
            eprintln!("admin endpoint {admin} unreachable: {e}");
            Ok(ExitCode::FAILURE)
        }
        Err(_) => {
            eprintln!("admin endpoint {admin} did not answer within 5 s");
            Ok(ExitCode::FAILURE)
        }
    }
}
