//! The processes under test. The benchmark binary re-executes itself in one of these roles, so the
//! server's CPU and memory are its own and the load generator does not share its runtime.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The ceiling: tonic's health service (an empty unary call) over the same rustls mutual-TLS
/// acceptor the gateway uses. No logic, no storage.
pub async fn serve_ceiling(pki: &Path) -> anyhow::Result<()> {
    signaalpoort_tls::install_crypto_provider();
    let tls = Arc::new(signaalpoort_tls::ReloadableTls::load(
        signaalpoort_tls::TlsFiles {
            cert_chain: pki.join("server.pem"),
            private_key: pki.join("server.key"),
            client_ca: pki.join("ca.pem"),
            crls: Vec::new(),
        },
    )?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (health, service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let incoming = signaalpoort_tls::tls_incoming(listener, tls, Duration::from_secs(10));
    println!("LISTENING {addr}");
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, signaalpoort_cli::wait_for_signal())
        .await?;
    Ok(())
}

/// The gateway from a config file, reporting its addresses on stdout.
pub async fn serve_gateway(config: &Path) -> anyhow::Result<()> {
    let config = signaalpoort_server::Config::load(config)?;
    let running =
        signaalpoort_server::start(config, Arc::new(signaalpoort_server::SystemClock)).await?;
    println!(
        "LISTENING {} {}",
        running.grpc_addr,
        running
            .admin_addr
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    signaalpoort_cli::wait_for_signal().await;
    running.shutdown().await;
    Ok(())
}

/// A child process of this binary and the addresses it printed.
pub struct Server {
    pub child: Child,
    pub grpc: String,
    pub admin: Option<String>,
}

impl Server {
    pub async fn spawn(args: &[&str]) -> anyhow::Result<Server> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(args)
            .env("SIGNAALPOORT_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .context("server did not start within 120 s")??
            .context("server exited before listening")?;
        let mut parts = line
            .strip_prefix("LISTENING ")
            .context("unexpected first line")?
            .split(' ');
        let grpc = parts.next().context("no address")?.to_owned();
        let admin = parts.next().filter(|s| !s.is_empty()).map(str::to_owned);
        Ok(Server { child, grpc, admin })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// SIGTERM and wait (graceful shutdown writes the final checkpoint).
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }

    /// Reads one counter from the admin /metrics endpoint.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let admin = self.admin.as_ref()?;
        let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
        s.write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}
