//! The soak: the gateway (a child process, release build) under mixed load for minutes, sampled
//! every few seconds — resident memory, open file descriptors, threads, live tokio tasks, database
//! and WAL size — and failed if memory, descriptors or tasks grow without bound.
//!
//!     cargo run --release -p signaalpoort-bench -- soak                 # 10 minutes per backend
//!     cargo run --release -p signaalpoort-bench -- soak --seconds 60    # the CI run
//!
//! Load, all at once: writes (signals registered, refreshed and withdrawn over a bounded set of
//! persons), queries (QueryInvolvement, ListSignals), consent churn (recorded and withdrawn),
//! notification streams opened and closed, slow readers (streams held open and never read),
//! checkpoint signing every 2 s, and midway a server-certificate reissue (file watcher) and a
//! SIGHUP. Samples go to `<out>/soak-<backend>.csv` and a plot to `<out>/soak-<backend>.svg`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use signaalpoort_api::v1 as pb;
use signaalpoort_cli::client::{AgencyClient, ClientIdentity};

use crate::children::Server;
use crate::scenario::{bsn_for, fresh_pg, setup_read_path, write_config};

const WIJ: &str = "wij-groningen";
const GGD: &str = "ggd-groningen";
/// Persons the writers cycle over: the live state stays bounded, only the access log grows.
const POPULATION: u64 = 500;

#[derive(Debug, Clone)]
pub struct SoakPlan {
    pub seconds: u64,
    pub sample_secs: u64,
    pub postgres: Option<String>,
    pub out: PathBuf,
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    t: f64,
    rss_mib: f64,
    fds: u64,
    threads: u64,
    tasks: u64,
    db_mib: f64,
    wal_mib: f64,
    calls: u64,
    errors: u64,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    errors: AtomicU64,
    /// Refusals a correct client does not get (INTERNAL, UNKNOWN, UNAVAILABLE, ...).
    bad: AtomicU64,
    first_bad: std::sync::Mutex<Option<String>>,
    by_code: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Counters {
    fn record<T>(&self, result: Result<T, tonic::Status>) -> Option<T> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(v) => Some(v),
            Err(status) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                *self
                    .by_code
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
                // Deliberate answers under load; everything else is a defect.
                let expected = matches!(
                    status.code(),
                    tonic::Code::NotFound
                        | tonic::Code::ResourceExhausted
                        | tonic::Code::PermissionDenied
                        | tonic::Code::FailedPrecondition
                );
                if !expected {
                    self.bad.fetch_add(1, Ordering::Relaxed);
                    let mut first = self.first_bad.lock().unwrap_or_else(|p| p.into_inner());
                    first.get_or_insert_with(|| format!("{status:?}"));
                }
                None
            }
        }
    }
}

pub async fn run(plan: SoakPlan) -> anyhow::Result<()> {
    std::fs::create_dir_all(&plan.out)?;
    let mut backends = vec!["sqlite".to_owned()];
    if plan.postgres.is_some() {
        backends.push("postgres".to_owned());
    } else {
        println!("soak: postgres skipped (pass --postgres or set SIGNAALPOORT_TEST_DATABASE_URL)");
    }
    let mut failures = Vec::new();
    for backend in backends {
        match soak_one(&plan, &backend).await {
            Ok(verdict) => {
                println!("soak {backend}: {verdict}");
            }
            Err(e) => {
                println!("soak {backend}: FAILED: {e:#}");
                failures.push(format!("{backend}: {e:#}"));
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("soak failed: {}", failures.join("; "))
    }
}

async fn soak_one(plan: &SoakPlan, backend: &str) -> anyhow::Result<String> {
    let work = tempfile::tempdir()?;
    let pki = work.path().join("pki");
    signaalpoort_cli::dev::init_pki(&pki, false)?;
    let (url, pg_name) = match backend {
        "sqlite" => (
            format!(
                "sqlite://{}",
                work.path().join("sqlite").join("soak.db").display()
            ),
            None,
        ),
        _ => {
            let url = fresh_pg(plan.postgres.as_deref().context("postgres url")?).await?;
            let name = url.rsplit('/').next().unwrap_or_default().to_owned();
            (url, Some(name))
        }
    };
    let config = write_config(work.path(), backend, &pki, &url)?;
    // Checkpoints every 2 s (signing under load); streams that end by age, so they churn.
    let text = std::fs::read_to_string(&config)?
        .replace(
            "checkpoint_interval_secs = 60",
            "checkpoint_interval_secs = 2",
        )
        .replace(
            "[limits]\n",
            "[limits]\nwatch_max_age_secs = 20\nwatch_heartbeat_secs = 5\n",
        );
    std::fs::write(&config, text)?;
    let server = Server::spawn(&["gateway", "--config", &config.display().to_string()]).await?;
    let endpoint = format!("https://{}", server.grpc);
    let result = drive(plan, backend, &server, &endpoint, &pki, &url, work.path()).await;
    server.stop().await;
    if let (Some(name), Some(admin)) = (pg_name, &plan.postgres) {
        let _ = signaalpoort_store::testing::drop_database(admin, &name).await;
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    plan: &SoakPlan,
    backend: &str,
    server: &Server,
    endpoint: &str,
    pki: &Path,
    url: &str,
    work: &Path,
) -> anyhow::Result<String> {
    // Persons with signals of WIJ and GGD and a consent: the query path discloses.
    let ids = Arc::new(setup_read_path(endpoint, pki, 50, 1_000_000).await?);
    let connect = |slug: &'static str, actor: &'static str| async move {
        AgencyClient::connect(endpoint, &ClientIdentity::dev(pki, slug), actor).await
    };
    let wij = connect(WIJ, "soak-writer").await?;
    let ggd = connect(GGD, "soak-reader").await?;
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let end = started + Duration::from_secs(plan.seconds);
    let mut tasks = Vec::new();

    // Writers: register (or refresh) and withdraw over a bounded population.
    for w in 0..4u64 {
        let (mut c, counters) = (wij.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = w;
            while Instant::now() < end {
                let bsn = bsn_for(n % POPULATION);
                let signal = counters.record(
                    c.signals
                        .register_signal(pb::RegisterSignalRequest {
                            request_id: format!("soak-{n}"),
                            bsn,
                            category: pb::Category::Parenting as i32,
                            contact: contact(),
                            ..Default::default()
                        })
                        .await,
                );
                if n % 3 == 0 {
                    if let Some(s) = signal.and_then(|r| r.into_inner().signal) {
                        counters.record(
                            c.signals
                                .withdraw_signal(pb::WithdrawSignalRequest {
                                    signal_id: s.signal_id,
                                    ..Default::default()
                                })
                                .await,
                        );
                    }
                }
                n += 4;
            }
        }));
    }
    // Readers: the disclosing query and the own list.
    for _ in 0..2 {
        let (mut c, counters, ids) = (ggd.clone(), counters.clone(), ids.clone());
        let mut wij = wij.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while Instant::now() < end {
                counters.record(
                    wij.signals
                        .query_involvement(pb::QueryInvolvementRequest {
                            signal_id: ids[n % ids.len()].clone(),
                            purpose: pb::Purpose::CareCoordination as i32,
                            ..Default::default()
                        })
                        .await,
                );
                counters.record(
                    c.signals
                        .list_signals(pb::ListSignalsRequest {
                            page_size: 50,
                            ..Default::default()
                        })
                        .await,
                );
                n += 1;
            }
        }));
    }
    // Consent churn.
    {
        let (mut c, counters) = (wij.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end {
                let consent = counters.record(
                    c.consents
                        .record_consent(pb::RecordConsentRequest {
                            bsn: bsn_for(n % POPULATION),
                            givers: vec![
                                pb::ConsentGiver::Subject as i32,
                                pb::ConsentGiver::ParentOrGuardian as i32,
                            ],
                            purposes: vec![pb::Purpose::CareCoordination as i32],
                            roles: vec![pb::Role::Wij as i32, pb::Role::Ggd as i32],
                            valid_until: Some(prost_types::Timestamp {
                                seconds: time::OffsetDateTime::now_utc().unix_timestamp()
                                    + 86400 * 30,
                                nanos: 0,
                            }),
                            evidence_ref: "soak".into(),
                            ..Default::default()
                        })
                        .await,
                );
                if let Some(id) = consent
                    .and_then(|r| r.into_inner().consent)
                    .map(|c| c.consent_id)
                {
                    counters.record(
                        c.consents
                            .withdraw_consent(pb::WithdrawConsentRequest {
                                consent_id: id,
                                ..Default::default()
                            })
                            .await,
                    );
                }
                n += 1;
            }
        }));
    }
    // Streams opened, read briefly, closed; and slow readers that never read.
    {
        let (c, counters) = (ggd.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let mut c = c.clone();
                let opened = counters.record(
                    c.notifications
                        .watch_notifications(pb::WatchNotificationsRequest {
                            purpose: pb::Purpose::CareCoordination as i32,
                            ..Default::default()
                        })
                        .await,
                );
                if let Some(stream) = opened {
                    let mut stream = stream.into_inner();
                    // Whatever arrives in a second (events, heartbeats), then hang up.
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while let Ok(Some(_)) = stream.message().await {}
                    })
                    .await;
                }
            }
        }));
    }
    {
        let (c, counters) = (ggd.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let mut held = Vec::new();
                for _ in 0..3 {
                    let mut c = c.clone();
                    if let Some(s) = counters.record(
                        c.notifications
                            .watch_notifications(pb::WatchNotificationsRequest {
                                purpose: pb::Purpose::CareCoordination as i32,
                                ..Default::default()
                            })
                            .await,
                    ) {
                        held.push(s.into_inner());
                    }
                }
                // Never read: the gateway must not buffer for them without bound.
                tokio::time::sleep(Duration::from_secs(15).min(end - Instant::now().min(end)))
                    .await;
                drop(held);
            }
        }));
    }

    // Sampling, with the certificate reissue and SIGHUP at half time.
    let mut samples = Vec::new();
    let mut reloaded = false;
    let pid = server.pid();
    let data_dir = work.join(backend);
    let wal_start = wal_position(url).await;
    loop {
        let now = Instant::now();
        let t = (now - started).as_secs_f64();
        samples.push(Sample {
            t,
            rss_mib: proc_field(pid, "VmRSS:").unwrap_or(0.0) / 1024.0,
            fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.count() as u64)
                .unwrap_or(0),
            threads: proc_field(pid, "Threads:").unwrap_or(0.0) as u64,
            tasks: server
                .metric("signaalpoort_runtime_tasks_alive")
                .await
                .unwrap_or(0.0) as u64,
            db_mib: db_size(url, &data_dir).await / 1048576.0,
            wal_mib: match (wal_position(url).await, wal_start) {
                (Some(now), Some(start)) => (now - start) as f64 / 1048576.0,
                _ => file_size(&data_dir, "-wal") / 1048576.0,
            },
            calls: counters.calls.load(Ordering::Relaxed),
            errors: counters.errors.load(Ordering::Relaxed),
        });
        if now >= end {
            break;
        }
        if !reloaded && t >= plan.seconds as f64 / 2.0 {
            reloaded = true;
            signaalpoort_tls::devpki::issue_server_cert(
                pki,
                &["localhost".to_owned(), "127.0.0.1".to_owned()],
                "server",
            )?;
            let _ = std::process::Command::new("kill")
                .arg("-HUP")
                .arg(pid.to_string())
                .status();
            println!("soak {backend}: server certificate reissued and SIGHUP sent at {t:.0} s");
        }
        tokio::time::sleep(Duration::from_secs(plan.sample_secs).min(end - now)).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    // After the reload the gateway still serves new connections with the reissued certificate.
    let mut fresh = connect(WIJ, "soak-after").await?;
    counters.record(
        fresh
            .signals
            .list_signals(pb::ListSignalsRequest::default())
            .await,
    );
    let checkpoint_age = server
        .metric("signaalpoort_checkpoint_age_seconds")
        .await
        .unwrap_or(-1.0);

    write_csv(&plan.out.join(format!("soak-{backend}.csv")), &samples)?;
    write_svg(
        &plan.out.join(format!("soak-{backend}.svg")),
        backend,
        &samples,
    )?;
    let verdict = judge(&samples)?;
    let bad = counters.bad.load(Ordering::Relaxed);
    if bad > 0 {
        let first = counters
            .first_bad
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        anyhow::bail!("{bad} calls failed unexpectedly, first: {first:?}");
    }
    if !(0.0..=10.0).contains(&checkpoint_age) {
        anyhow::bail!("checkpoints stopped under load: last one {checkpoint_age} s ago");
    }
    let last = samples.last().copied().unwrap_or_default();
    let by_code = counters
        .by_code
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(format!(
        "{} s, {} calls ({:.0}/s, {} deliberate refusals {by_code:?}), {verdict}, database {:.1} MiB, WAL {:.1} MiB, checkpoint {checkpoint_age:.0} s old",
        plan.seconds,
        last.calls,
        last.calls as f64 / last.t.max(1.0),
        last.errors,
        last.db_mib,
        last.wal_mib,
    ))
}

/// Flat or not: after the first fifth (warm-up), the last quarter's peak may exceed the second
/// quarter's peak only by a bounded margin — a leak grows with time, a plateau does not.
fn judge(samples: &[Sample]) -> anyhow::Result<String> {
    let n = samples.len();
    if n < 8 {
        anyhow::bail!("too few samples ({n}) to judge; run longer or sample more often");
    }
    let early = &samples[n / 5..n / 2];
    let late = &samples[n * 3 / 4..];
    let peak = |s: &[Sample], f: fn(&Sample) -> f64| s.iter().map(f).fold(0.0, f64::max);
    let (rss0, rss1) = (peak(early, |s| s.rss_mib), peak(late, |s| s.rss_mib));
    let (fd0, fd1) = (peak(early, |s| s.fds as f64), peak(late, |s| s.fds as f64));
    let (tk0, tk1) = (
        peak(early, |s| s.tasks as f64),
        peak(late, |s| s.tasks as f64),
    );
    let mut problems = Vec::new();
    if rss1 > rss0 * 1.25 + 16.0 {
        problems.push(format!(
            "resident memory grew from {rss0:.1} to {rss1:.1} MiB"
        ));
    }
    if fd1 > fd0 + 16.0 {
        problems.push(format!("open descriptors grew from {fd0} to {fd1}"));
    }
    if tk1 > tk0 * 1.5 + 32.0 {
        problems.push(format!("live tasks grew from {tk0} to {tk1}"));
    }
    let summary = format!(
        "RSS {rss0:.1} -> {rss1:.1} MiB, fds {fd0} -> {fd1}, tasks {tk0} -> {tk1} (peaks of the early and late windows)"
    );
    if problems.is_empty() {
        Ok(format!("flat: {summary}"))
    } else {
        anyhow::bail!("{}; {summary}", problems.join("; "))
    }
}

fn contact() -> Option<pb::ContactPoint> {
    Some(pb::ContactPoint {
        team: "Soak".into(),
        phone: "050 000 0000".into(),
        email: String::new(),
    })
}

/// A `kB` (or count) field of /proc/<pid>/status.
fn proc_field(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn file_size(dir: &Path, suffix: &str) -> f64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len() as f64)
        .sum()
}

async fn db_size(url: &str, data_dir: &Path) -> f64 {
    if url.starts_with("sqlite:") {
        return file_size(data_dir, ".db");
    }
    pg_scalar(url, "SELECT pg_database_size(current_database())::bigint")
        .await
        .unwrap_or(0) as f64
}

/// PostgreSQL: the WAL insert position in bytes (WAL written is its growth). SQLite: None.
async fn wal_position(url: &str) -> Option<i64> {
    if url.starts_with("sqlite:") {
        return None;
    }
    pg_scalar(
        url,
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint",
    )
    .await
}

async fn pg_scalar(url: &str, sql: &str) -> Option<i64> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.ok()?;
    let v: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.ok()?;
    let _ = c.close().await;
    Some(v)
}

fn write_csv(path: &Path, samples: &[Sample]) -> anyhow::Result<()> {
    let mut out = String::from("seconds,rss_mib,fds,threads,tasks,db_mib,wal_mib,calls,errors\n");
    for s in samples {
        out.push_str(&format!(
            "{:.1},{:.2},{},{},{},{:.2},{:.2},{},{}\n",
            s.t, s.rss_mib, s.fds, s.threads, s.tasks, s.db_mib, s.wal_mib, s.calls, s.errors
        ));
    }
    std::fs::write(path, out)?;
    Ok(())
}

type Field = fn(&Sample) -> f64;

/// Small panels (RSS, descriptors, tasks, database + WAL) against time, as plain SVG.
fn write_svg(path: &Path, backend: &str, samples: &[Sample]) -> anyhow::Result<()> {
    let series: [(&str, Field); 5] = [
        ("resident memory (MiB)", |s| s.rss_mib),
        ("open file descriptors", |s| s.fds as f64),
        ("live tokio tasks", |s| s.tasks as f64),
        ("database (MiB)", |s| s.db_mib),
        ("WAL (MiB)", |s| s.wal_mib),
    ];
    let (w, h, pad) = (640.0, 120.0, 40.0);
    let t_max = samples.last().map_or(1.0, |s| s.t.max(1.0));
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{pad}\" y=\"16\" font-size=\"13\">signaalpoort soak, {backend}: {t_max:.0} s</text>\n",
        w + 2.0 * pad,
        series.len() as f64 * (h + pad) + pad
    );
    for (i, (name, f)) in series.iter().enumerate() {
        let top = pad + i as f64 * (h + pad);
        let max = samples.iter().map(f).fold(0.0, f64::max).max(1e-9) * 1.1;
        let points: Vec<String> = samples
            .iter()
            .map(|s| {
                format!(
                    "{:.1},{:.1}",
                    pad + s.t / t_max * w,
                    top + h - f(s) / max * h
                )
            })
            .collect();
        svg.push_str(&format!(
            "<text x=\"{pad}\" y=\"{:.0}\">{name} (max {:.1})</text>\n<rect x=\"{pad}\" y=\"{top:.0}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#999\"/>\n<polyline fill=\"none\" stroke=\"#1f5fa8\" stroke-width=\"1.5\" points=\"{}\"/>\n",
            top - 4.0,
            max / 1.1,
            points.join(" ")
        ));
    }
    svg.push_str("</svg>\n");
    std::fs::write(path, svg)?;
    Ok(())
}
