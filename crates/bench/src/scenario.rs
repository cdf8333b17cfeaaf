//! What is measured, in order, and the report.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use signaalpoort_api::v1 as pb;
use signaalpoort_cli::client::{AgencyClient, ClientIdentity};
use signaalpoort_core::access_log::{AccessRecord, DecisionCode, RecordDraft, GENESIS_HASH};
use signaalpoort_core::{complete_bsn, Category, ContactPoint, Oin, SubjectPseudonym};
use signaalpoort_store::{HouseholdMember, SignalRow, Store, StoreOptions};

use crate::children::Server;
use crate::load::{self, proc_stats, LoadResult};

pub struct Plan {
    smoke: bool,
    warmup: Duration,
    measure: Duration,
    concurrencies: Vec<usize>,
    connections: usize,
    scales: Vec<usize>,
    verify_records: usize,
    handshakes: usize,
    postgres: Option<String>,
    out: PathBuf,
}

impl Plan {
    pub fn from_args(
        smoke: bool,
        seconds: Option<u64>,
        no_scale: bool,
        postgres: Option<String>,
        out: PathBuf,
    ) -> Plan {
        if smoke {
            Plan {
                smoke,
                warmup: Duration::from_millis(300),
                measure: Duration::from_secs(seconds.unwrap_or(1)),
                concurrencies: vec![1, 16],
                connections: 2,
                scales: vec![1_000],
                verify_records: 20_000,
                handshakes: 5,
                postgres,
                out,
            }
        } else {
            Plan {
                smoke,
                warmup: Duration::from_secs(2),
                measure: Duration::from_secs(seconds.unwrap_or(8)),
                concurrencies: vec![1, 16, 64, 256],
                connections: 4,
                scales: if no_scale {
                    vec![10_000]
                } else {
                    vec![10_000, 1_000_000]
                },
                verify_records: 1_000_000,
                handshakes: 200,
                postgres,
                out,
            }
        }
    }
}

#[derive(Debug, Serialize)]
struct Cell {
    workload: String,
    backend: String,
    #[serde(flatten)]
    load: LoadResult,
    /// Against the transport ceiling (bare tonic + mTLS) at the same concurrency.
    ratio_to_ceiling: Option<f64>,
    /// The store's ceiling (lean group-commit writer, same backend and concurrency), calls/s.
    store_ceiling: Option<f64>,
    /// Against the lower of the transport and the store ceilings: the one that binds here.
    ratio_to_lower_ceiling: Option<f64>,
    /// Server CPU time per call (user + system), microseconds.
    cpu_us_per_call: Option<f64>,
    server_cpu_percent: f64,
    server_peak_rss_mib: f64,
    log_appends_per_second: Option<f64>,
}

#[derive(Debug, Serialize)]
struct ScaleRow {
    backend: String,
    households: usize,
    signals: usize,
    preload_seconds: f64,
    #[serde(flatten)]
    load: LoadResult,
}

#[derive(Debug, Serialize)]
struct VerifyRow {
    records: usize,
    bytes: usize,
    verify_records_per_second: f64,
    raw_sha256_records_per_second: f64,
    ratio: f64,
}

#[derive(Debug, Serialize)]
struct HandshakeRow {
    backend: String,
    samples: usize,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Debug, Serialize, Default)]
struct Report {
    date: String,
    machine: String,
    command: String,
    cells: Vec<Cell>,
    scale: Vec<ScaleRow>,
    verify: Vec<VerifyRow>,
    handshake: Vec<HandshakeRow>,
}

const WIJ: &str = "wij-groningen";
const GGD: &str = "ggd-groningen";

pub async fn run(plan: Plan) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let pki = work.path().join("pki");
    signaalpoort_cli::dev::init_pki(&pki, false)?;
    let mut report = Report {
        date: time::OffsetDateTime::now_utc().date().to_string(),
        machine: machine(),
        command: if plan.smoke {
            "cargo run --release -p signaalpoort-bench -- --smoke".into()
        } else {
            "cargo run --release -p signaalpoort-bench".into()
        },
        ..Default::default()
    };

    // 1. The ceiling.
    let ceiling = Server::spawn(&["ceiling", "--pki", &pki.display().to_string()]).await?;
    let channels =
        connect_all(&format!("https://{}", ceiling.grpc), &pki, plan.connections).await?;
    let mut ceiling_rates = Vec::new();
    for &c in &plan.concurrencies {
        let chans = channels.clone();
        let before = proc_stats(ceiling.pid());
        let result = load::run(c, plan.warmup, plan.measure, move |w, _| {
            let mut health =
                tonic_health::pb::health_client::HealthClient::new(chans[w % chans.len()].clone());
            async move {
                health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        let after = proc_stats(ceiling.pid());
        println!(
            "ceiling      c={c:<4} {:>9.0} calls/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
            result.calls_per_second, result.p50_ms, result.p99_ms
        );
        ceiling_rates.push((c, result.calls_per_second));
        report.cells.push(Cell {
            workload: "empty unary (bare tonic + mTLS)".into(),
            backend: "-".into(),
            server_cpu_percent: cpu_percent(before, after, plan.warmup + plan.measure),
            server_peak_rss_mib: after.peak_rss_mib,
            ratio_to_ceiling: Some(1.0),
            store_ceiling: None,
            ratio_to_lower_ceiling: None,
            cpu_us_per_call: per_call(
                before,
                after,
                result.calls,
                plan.warmup + plan.measure,
                plan.measure,
            ),
            log_appends_per_second: None,
            load: result,
        });
    }
    ceiling.stop().await;
    let ratio = |c: usize, rate: f64| {
        ceiling_rates
            .iter()
            .find(|(cc, _)| *cc == c)
            .map(|(_, r)| rate / r)
    };

    // 2. The gateway on each backend.
    let mut backends = vec![(
        "sqlite".to_owned(),
        format!(
            "sqlite://{}",
            work.path().join("sqlite").join("bench.db").display()
        ),
    )];
    if let Some(admin) = &plan.postgres {
        backends.push(("postgres".to_owned(), fresh_pg(admin).await?));
    } else {
        println!("postgres rows skipped: pass --postgres or set SIGNAALPOORT_TEST_DATABASE_URL");
    }
    let mut bsn_offset = 0u64;
    for (name, url) in &backends {
        // The store's own ceiling on this backend, at each concurrency.
        let mut store_rates = Vec::new();
        for &c in &plan.concurrencies {
            let result = if name == "sqlite" {
                crate::store_ceiling::sqlite(
                    &work.path().join("store-ceiling"),
                    c,
                    plan.warmup,
                    plan.measure,
                )
                .await?
            } else {
                crate::store_ceiling::postgres(url, c, plan.warmup, plan.measure).await?
            };
            println!(
                "{name:<8} store ceiling c={c:<4} {:>9.0} calls/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
                result.calls_per_second, result.p50_ms, result.p99_ms
            );
            store_rates.push((c, result.calls_per_second));
            report.cells.push(Cell {
                workload: "store ceiling (lean group-commit writer, 1 state row + 1 record)".into(),
                backend: name.clone(),
                ratio_to_ceiling: ratio(c, result.calls_per_second),
                store_ceiling: Some(result.calls_per_second),
                ratio_to_lower_ceiling: None,
                cpu_us_per_call: None,
                server_cpu_percent: 0.0,
                server_peak_rss_mib: 0.0,
                log_appends_per_second: None,
                load: result,
            });
        }
        let store_rate = |c: usize| store_rates.iter().find(|(cc, _)| *cc == c).map(|(_, r)| *r);
        let lower = |c: usize, rate: f64| {
            let transport = ceiling_rates
                .iter()
                .find(|(cc, _)| *cc == c)
                .map(|(_, r)| *r);
            match (transport, store_rate(c)) {
                (Some(t), Some(s)) => Some(rate / t.min(s)),
                (Some(t), None) => Some(rate / t),
                (None, Some(s)) => Some(rate / s),
                (None, None) => None,
            }
        };
        let config = write_config(work.path(), name, &pki, url)?;
        let gateway =
            Server::spawn(&["gateway", "--config", &config.display().to_string()]).await?;
        let endpoint = format!("https://{}", gateway.grpc);
        let clients = clients(&endpoint, &pki, WIJ, plan.connections).await?;
        for &c in &plan.concurrencies {
            let cl = clients.clone();
            let offset = bsn_offset;
            bsn_offset += 2_000_000;
            let before = proc_stats(gateway.pid());
            let appends_before = gateway
                .metric("signaalpoort_access_log_appends_total")
                .await;
            let result = load::run(c, plan.warmup, plan.measure, move |w, n| {
                let mut client = cl[w % cl.len()].clone();
                async move {
                    client
                        .signals
                        .register_signal(pb::RegisterSignalRequest {
                            bsn: bsn_for(offset + n),
                            category: pb::Category::Parenting as i32,
                            contact: Some(pb::ContactPoint {
                                team: "Bench".into(),
                                phone: "050 000 0000".into(),
                                email: String::new(),
                            }),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            })
            .await;
            let after = proc_stats(gateway.pid());
            let appends_after = gateway
                .metric("signaalpoort_access_log_appends_total")
                .await;
            let appends = match (appends_before, appends_after) {
                (Some(a), Some(b)) => Some((b - a) / (plan.warmup + plan.measure).as_secs_f64()),
                _ => None,
            };
            println!("{name:<8} write c={c:<4} {:>9.0} calls/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}", result.calls_per_second, result.p50_ms, result.p99_ms, result.errors);
            report.cells.push(Cell {
                workload: "RegisterSignal (durable write + log record)".into(),
                backend: name.clone(),
                ratio_to_ceiling: ratio(c, result.calls_per_second),
                store_ceiling: store_rate(c),
                ratio_to_lower_ceiling: lower(c, result.calls_per_second),
                cpu_us_per_call: per_call(
                    before,
                    after,
                    result.calls,
                    plan.warmup + plan.measure,
                    plan.measure,
                ),
                server_cpu_percent: cpu_percent(before, after, plan.warmup + plan.measure),
                server_peak_rss_mib: after.peak_rss_mib,
                log_appends_per_second: appends,
                load: result,
            });
        }
        let signal_ids =
            Arc::new(setup_read_path(&endpoint, &pki, 256, 900_000 + bsn_offset).await?);
        bsn_offset += 2_000;
        for &c in &plan.concurrencies {
            let result = read_load(
                &clients,
                &signal_ids,
                c,
                plan.warmup,
                plan.measure,
                &gateway,
            )
            .await;
            let (result, cpu, rss) = result;
            // CPU % over warm-up + measure; calls counted over the measured window only.
            let cpu_us = (result.calls > 0).then(|| {
                cpu / 100.0 * (plan.warmup + plan.measure).as_secs_f64()
                    / (result.calls as f64 * (plan.warmup + plan.measure).as_secs_f64()
                        / plan.measure.as_secs_f64())
                    * 1e6
            });
            println!("{name:<8} read  c={c:<4} {:>9.0} calls/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}", result.calls_per_second, result.p50_ms, result.p99_ms, result.errors);
            report.cells.push(Cell {
                workload: "QueryInvolvement (policy + log record)".into(),
                backend: name.clone(),
                ratio_to_ceiling: ratio(c, result.calls_per_second),
                store_ceiling: store_rate(c),
                ratio_to_lower_ceiling: lower(c, result.calls_per_second),
                cpu_us_per_call: cpu_us,
                server_cpu_percent: cpu,
                server_peak_rss_mib: rss,
                log_appends_per_second: None,
                load: result,
            });
        }
        report
            .handshake
            .push(handshakes(&endpoint, &pki, name, plan.handshakes).await?);
        gateway.stop().await;
        if let (Some(admin), Some(db)) = (&plan.postgres, url.strip_prefix("postgres://")) {
            // The run's database is scratch: drop it rather than leave it on the server.
            if let Some(name) = db.rsplit('/').next().and_then(|n| n.split('?').next()) {
                signaalpoort_store::testing::drop_database(admin, name).await?;
            }
        }
    }

    // 3. Scale: the read path with many households preloaded (SQLite, the embedded default).
    for &households in &plan.scales {
        let dir = work.path().join(format!("scale-{households}"));
        let url = format!("sqlite://{}", dir.join("bench.db").display());
        let started = Instant::now();
        preload(&url, households).await?;
        let preload_seconds = started.elapsed().as_secs_f64();
        let config = write_config(work.path(), &format!("scale-{households}"), &pki, &url)?;
        let gateway =
            Server::spawn(&["gateway", "--config", &config.display().to_string()]).await?;
        let endpoint = format!("https://{}", gateway.grpc);
        let clients = clients(&endpoint, &pki, WIJ, plan.connections).await?;
        let ids = Arc::new(setup_read_path(&endpoint, &pki, 256, 5_000_000 + bsn_offset).await?);
        bsn_offset += 2_000;
        let c = if plan.smoke { 16 } else { 64 };
        let (result, _, _) =
            read_load(&clients, &ids, c, plan.warmup, plan.measure, &gateway).await;
        println!("scale {households:>8} households  read c={c}: {:>9.0} calls/s  p50 {:>6.2} ms  p99 {:>6.2} ms (preload {preload_seconds:.1} s)", result.calls_per_second, result.p50_ms, result.p99_ms);
        report.scale.push(ScaleRow {
            backend: "sqlite".into(),
            households,
            signals: households * 3,
            preload_seconds,
            load: result,
        });
        gateway.stop().await;
    }

    // 4. `audit verify` against raw SHA-256 over the same bytes.
    report.verify.push(verify_throughput(plan.verify_records)?);

    write_report(&plan, &report)?;
    let failed: Vec<&Cell> = report.cells.iter().filter(|c| c.load.errors > 0).collect();
    if !failed.is_empty() {
        anyhow::bail!(
            "{} cell(s) had errors, first: {:?}",
            failed.len(),
            failed[0].load.first_error
        );
    }
    Ok(())
}

/// Server CPU microseconds per call. CPU is sampled over warm-up + measure, calls over the measured
/// window, so the calls are scaled to the whole span at the measured rate.
fn per_call(
    before: load::ProcStats,
    after: load::ProcStats,
    calls: u64,
    span: Duration,
    measure: Duration,
) -> Option<f64> {
    let calls_in_span = calls as f64 * span.as_secs_f64() / measure.as_secs_f64();
    (calls > 0).then(|| (after.cpu_seconds - before.cpu_seconds) / calls_in_span * 1e6)
}

fn cpu_percent(before: load::ProcStats, after: load::ProcStats, over: Duration) -> f64 {
    (after.cpu_seconds - before.cpu_seconds) / over.as_secs_f64() * 100.0
}

/// A distinct valid BSN per number (about one eight-digit prefix in eleven has no check digit).
pub(crate) fn bsn_for(n: u64) -> String {
    let mut prefix = 10_000_000 + (n * 4) % 89_000_000;
    loop {
        if let Some(b) = complete_bsn(&format!("{prefix:08}")) {
            return b;
        }
        prefix += 1;
    }
}

async fn connect_all(
    endpoint: &str,
    pki: &Path,
    n: usize,
) -> anyhow::Result<Vec<tonic::transport::Channel>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            signaalpoort_cli::client::channel(
                endpoint,
                &ClientIdentity::dev(pki, WIJ),
                "localhost",
            )
            .await?,
        );
    }
    Ok(out)
}

async fn clients(
    endpoint: &str,
    pki: &Path,
    slug: &str,
    n: usize,
) -> anyhow::Result<Vec<AgencyClient>> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(
            AgencyClient::connect(
                endpoint,
                &ClientIdentity::dev(pki, slug),
                &format!("bench-{i}"),
            )
            .await?,
        );
    }
    Ok(out)
}

/// `n` persons on whom WIJ and GGD both have signals, with consent: the full read path.
pub(crate) async fn setup_read_path(
    endpoint: &str,
    pki: &Path,
    n: u64,
    offset: u64,
) -> anyhow::Result<Vec<String>> {
    let mut wij =
        AgencyClient::connect(endpoint, &ClientIdentity::dev(pki, WIJ), "bench-setup").await?;
    let mut ggd =
        AgencyClient::connect(endpoint, &ClientIdentity::dev(pki, GGD), "bench-setup").await?;
    let contact = || {
        Some(pb::ContactPoint {
            team: "Bench".into(),
            phone: "050 000 0000".into(),
            email: String::new(),
        })
    };
    let mut ids = Vec::new();
    for i in 0..n {
        let bsn = bsn_for(offset + i);
        let s = wij
            .signals
            .register_signal(pb::RegisterSignalRequest {
                bsn: bsn.clone(),
                category: pb::Category::Parenting as i32,
                contact: contact(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .signal
            .context("signal")?;
        ggd.signals
            .register_signal(pb::RegisterSignalRequest {
                bsn: bsn.clone(),
                category: pb::Category::Health as i32,
                contact: contact(),
                ..Default::default()
            })
            .await?;
        wij.consents
            .record_consent(pb::RecordConsentRequest {
                bsn,
                // No declared birth date: the strictest rule, both givers.
                givers: vec![
                    pb::ConsentGiver::Subject as i32,
                    pb::ConsentGiver::ParentOrGuardian as i32,
                ],
                purposes: vec![pb::Purpose::CareCoordination as i32],
                roles: vec![pb::Role::Wij as i32, pb::Role::Ggd as i32],
                valid_until: Some(prost_types::Timestamp {
                    seconds: time::OffsetDateTime::now_utc().unix_timestamp() + 86400 * 300,
                    nanos: 0,
                }),
                evidence_ref: "bench".into(),
                ..Default::default()
            })
            .await?;
        ids.push(s.signal_id);
    }
    Ok(ids)
}

async fn read_load(
    clients: &[AgencyClient],
    ids: &Arc<Vec<String>>,
    c: usize,
    warmup: Duration,
    measure: Duration,
    gateway: &Server,
) -> (LoadResult, f64, f64) {
    let cl = clients.to_vec();
    let ids = ids.clone();
    let before = proc_stats(gateway.pid());
    let result = load::run(c, warmup, measure, move |w, n| {
        let mut client = cl[w % cl.len()].clone();
        let id = ids[(n as usize) % ids.len()].clone();
        async move {
            let r = client
                .signals
                .query_involvement(pb::QueryInvolvementRequest {
                    signal_id: id,
                    purpose: pb::Purpose::CareCoordination as i32,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            if r.get_ref().involvements.len() != 1 {
                return Err(format!(
                    "expected 1 involvement, got {}",
                    r.get_ref().involvements.len()
                ));
            }
            Ok(())
        }
    })
    .await;
    let after = proc_stats(gateway.pid());
    (
        result,
        cpu_percent(before, after, warmup + measure),
        after.peak_rss_mib,
    )
}

async fn handshakes(
    endpoint: &str,
    pki: &Path,
    backend: &str,
    n: usize,
) -> anyhow::Result<HandshakeRow> {
    let mut samples = Vec::new();
    for _ in 0..n {
        let t0 = Instant::now();
        let mut c =
            AgencyClient::connect(endpoint, &ClientIdentity::dev(pki, WIJ), "bench-hs").await?;
        c.signals
            .list_signals(pb::ListSignalsRequest {
                page_size: 1,
                ..Default::default()
            })
            .await?;
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    Ok(HandshakeRow {
        backend: backend.into(),
        samples: n,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
    })
}

pub(crate) fn write_config(
    root: &Path,
    name: &str,
    pki: &Path,
    url: &str,
) -> anyhow::Result<PathBuf> {
    let data = root.join(name);
    std::fs::create_dir_all(&data)?;
    let toml = signaalpoort_cli::dev::dev_config_toml(
        pki,
        &data,
        "127.0.0.1:0".parse()?,
        Some("127.0.0.1:0".parse()?),
    )?;
    // Benchmarks drive one agency far beyond a production rate limit.
    let toml = toml.replacen(
        "[server]\n",
        &format!("[server]\ndatabase_url = \"{url}\"\n"),
        1,
    )
        + "\n[limits]\ncalls_per_second_per_agency = 1000000\nburst_per_agency = 1000000\n";
    let path = data.join("bench.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

pub(crate) async fn fresh_pg(admin: &str) -> anyhow::Result<String> {
    use sqlx_free::create_database;
    create_database(admin).await
}

/// Creating a database needs no store internals; a tiny helper keeps sqlx out of this crate's API.
mod sqlx_free {
    pub async fn create_database(admin: &str) -> anyhow::Result<String> {
        let name = format!("sp_bench_{}", uuid::Uuid::new_v4().simple());
        let url = signaalpoort_store::testing::create_database(admin, &name).await?;
        Ok(url)
    }
}

/// Bulk-loads `households` households of three (a parent and two children) with three signals
/// each, from three agencies — straight into the store, without log records (setup, not workload).
async fn preload(url: &str, households: usize) -> anyhow::Result<()> {
    let store = Store::open(url, StoreOptions::default()).await?;
    let agencies = signaalpoort_tls::devpki::default_dev_agencies();
    let oin = |slug: &str| -> anyhow::Result<Oin> {
        let a = agencies
            .iter()
            .find(|a| a.slug == slug)
            .context("dev agency")?;
        Ok(Oin::parse(&a.oin)?)
    };
    let (wij, ggd, jh, gem) = (
        oin(WIJ)?,
        oin(GGD)?,
        oin("jeugdhulp-accare")?,
        oin("gemeente-groningen")?,
    );
    let now = time::OffsetDateTime::now_utc();
    let contact = ContactPoint {
        team: "Preload".into(),
        phone: "050 000 0000".into(),
        email: None,
    };
    const CHUNK: usize = 20_000;
    let mut n = 0usize;
    while n < households {
        let end = (n + CHUNK).min(households);
        let mut hh = Vec::with_capacity(end - n);
        let mut signals = Vec::with_capacity((end - n) * 3);
        for i in n..end {
            let subject = |k: u8| {
                let mut b = [0u8; 32];
                b[..8].copy_from_slice(&(i as u64).to_be_bytes());
                b[8] = k;
                b[31] = 0xB5;
                SubjectPseudonym::from_bytes(b)
            };
            let members: Vec<HouseholdMember> = (0..3)
                .map(|k| HouseholdMember {
                    subject: subject(k),
                    protected: false,
                    birth_date: None,
                })
                .collect();
            hh.push((format!("pre-{i}"), format!("pre-{i}"), gem.clone(), members));
            for (k, (agency, category)) in [
                (wij.clone(), Category::Finances),
                (ggd.clone(), Category::Health),
                (jh.clone(), Category::YouthCare),
            ]
            .into_iter()
            .enumerate()
            {
                signals.push(SignalRow {
                    id: format!("pre-{i}-{k}"),
                    agency,
                    subject: subject(k as u8),
                    category,
                    contact: contact.clone(),
                    registered_at: now,
                    refreshed_at: now,
                    expires_at: now + time::Duration::days(365),
                    withdrawn_at: None,
                });
            }
        }
        store.bulk_load(&hh, &signals).await?;
        n = end;
    }
    Ok(())
}

fn verify_throughput(records: usize) -> anyhow::Result<VerifyRow> {
    let mut prev = GENESIS_HASH;
    let mut lines = Vec::with_capacity(records * 560);
    let mut canonical = Vec::with_capacity(records);
    let t = time::OffsetDateTime::now_utc();
    for seq in 1..=records as u64 {
        let draft = RecordDraft {
            time: t,
            agency_oin: "00000099000000000002".into(),
            role: Some(signaalpoort_core::Role::Wij),
            actor_id: "wij-oost-042".into(),
            action: "QueryInvolvement".into(),
            subjects: vec![hex_of(seq, 1), hex_of(seq, 2)],
            household_id: String::new(),
            purpose: Some(signaalpoort_core::Purpose::CareCoordination),
            basis: Some(signaalpoort_core::Basis::Consent),
            decision: DecisionCode::Allow,
            reason: "CONSENT_SHARING".into(),
            status_code: 0,
            request_id: String::new(),
            cert_fingerprint: hex_of(seq, 3),
            justification: String::new(),
            flagged_for_review: false,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            object_id: "3f2c1a8e-5d7b-4c1e-9a0b-1d2e3f4a5b6c".into(),
        };
        let r = AccessRecord::chain(seq, prev, draft)?;
        prev = r.hash;
        canonical.push(r.canonical_bytes()?);
        lines.extend_from_slice(r.export_line()?.as_bytes());
        lines.push(b'\n');
    }
    // Raw SHA-256 over exactly the bytes verify hashes.
    let t0 = Instant::now();
    let mut sink = 0u8;
    for c in &canonical {
        sink ^= ring::digest::digest(&ring::digest::SHA256, c).as_ref()[0];
    }
    let raw = t0.elapsed().as_secs_f64();
    std::hint::black_box(sink);
    // One signed checkpoint over the whole tree, as a real export has; verify recomputes the tree.
    let mut tree = signaalpoort_core::access_log::tree::Frontier::new();
    for line in signaalpoort_core::access_log::export_lines(&lines) {
        if let Some(r) = AccessRecord::from_export_line(&String::from_utf8_lossy(line)) {
            tree.append(&r.hash);
        }
    }
    let signer = signaalpoort_core::access_log::Ed25519FileSigner::from_pkcs8(
        "bench.example/log",
        &signaalpoort_core::access_log::Ed25519FileSigner::generate_pkcs8()?,
    )?;
    let signer: &dyn signaalpoort_core::access_log::CheckpointSigner = &signer;
    let checkpoint = signer.sign_checkpoint(tree.size(), &tree.root())?;
    let policy = signaalpoort_core::access_log::TrustPolicy {
        log_key: signer.verifier_key(),
        witnesses: Vec::new(),
        quorum: 0,
    };
    let t0 = Instant::now();
    let report = signaalpoort_core::access_log::verify_export(
        signaalpoort_core::access_log::export_lines(&lines),
        &signaalpoort_core::access_log::VerifyInput {
            policy: &policy,
            checkpoints: std::slice::from_ref(&checkpoint),
            trusted: None,
            start: signaalpoort_core::access_log::ChainStart::Genesis,
        },
    );
    let verify = t0.elapsed().as_secs_f64();
    anyhow::ensure!(
        report.is_ok() && report.records == records as u64,
        "verify failed on the benchmark log: {:?}",
        report.first_problem
    );
    let row = VerifyRow {
        records,
        bytes: lines.len(),
        verify_records_per_second: records as f64 / verify,
        raw_sha256_records_per_second: records as f64 / raw,
        ratio: raw / verify,
    };
    println!("audit verify: {:.0} records/s; raw SHA-256 over the same bytes {:.0} records/s; ratio {:.2}", row.verify_records_per_second, row.raw_sha256_records_per_second, row.ratio);
    Ok(row)
}

fn hex_of(seq: u64, k: u8) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        &[&seq.to_be_bytes()[..], &[k]].concat(),
    );
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

fn write_report(plan: &Plan, report: &Report) -> anyhow::Result<()> {
    let dir = plan.out.join("bench-results");
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::to_string_pretty(report)?;
    let name = if plan.smoke {
        "smoke.json"
    } else {
        "latest.json"
    };
    std::fs::write(dir.join(name), &json)?;
    if plan.smoke {
        println!("smoke run: results in {}", dir.join(name).display());
        return Ok(());
    }
    let mut md = format!(
        "# Benchmarks\n\nMeasured on {} ({}), load generator and servers on the same machine.\n\
Command: `{}` (about 15 minutes on 2 cores, most of it preloading the 1-million-household store). Raw results: `bench-results/latest.json`.\n\n\
Servers run as separate processes; \"CPU %\" is the server process's CPU time over the cell \
(200% = both cores). Every gateway call is durable and audited: no call answers before its \
access-log record is committed (SQLite `synchronous=FULL`, PostgreSQL `synchronous_commit=on`).\n\n\
## Calls per second and latency\n\n| workload | store | in flight | calls/s | p50 ms | p99 ms | p99.9 ms | errors | vs transport | store ceiling | vs lower ceiling | server CPU µs/call | server CPU % | peak RSS MiB |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        report.date, report.machine, report.command
    );
    for c in &report.cells {
        md.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {:.0} | {:.0} |\n",
            c.workload,
            c.backend,
            c.load.concurrency,
            c.load.calls_per_second,
            c.load.p50_ms,
            c.load.p99_ms,
            c.load.p999_ms,
            c.load.errors,
            c.ratio_to_ceiling
                .map(|r| format!("{:.0}%", r * 100.0))
                .unwrap_or_default(),
            c.store_ceiling
                .map(|r| format!("{r:.0}"))
                .unwrap_or_default(),
            c.ratio_to_lower_ceiling
                .map(|r| format!("{:.0}%", r * 100.0))
                .unwrap_or_default(),
            c.cpu_us_per_call
                .map(|r| format!("{r:.0}"))
                .unwrap_or_default(),
            c.server_cpu_percent,
            c.server_peak_rss_mib
        ));
    }
    md.push_str("\n## Access-log appends under the write load\n\n| store | in flight | appends/s |\n|---|---:|---:|\n");
    for c in report
        .cells
        .iter()
        .filter(|c| c.log_appends_per_second.is_some())
    {
        md.push_str(&format!(
            "| {} | {} | {:.0} |\n",
            c.backend,
            c.load.concurrency,
            c.log_appends_per_second.unwrap_or_default()
        ));
    }
    md.push_str("\n## Read path against store size (SQLite, QueryInvolvement)\n\n| households | signals | preload s | in flight | calls/s | p50 ms | p99 ms |\n|---:|---:|---:|---:|---:|---:|---:|\n");
    for s in &report.scale {
        md.push_str(&format!(
            "| {} | {} | {:.0} | {} | {:.0} | {:.2} | {:.2} |\n",
            s.households,
            s.signals,
            s.preload_seconds,
            s.load.concurrency,
            s.load.calls_per_second,
            s.load.p50_ms,
            s.load.p99_ms
        ));
    }
    md.push_str("\n## `audit verify` against raw SHA-256 (ring) over the same bytes\n\n| records | MB | verify records/s | raw SHA-256 records/s | verify / raw |\n|---:|---:|---:|---:|---:|\n");
    for v in &report.verify {
        md.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0}% |\n",
            v.records,
            v.bytes as f64 / 1e6,
            v.verify_records_per_second,
            v.raw_sha256_records_per_second,
            v.ratio * 100.0
        ));
    }
    md.push_str("\n## New connection: mTLS handshake + first call\n\n| store | samples | p50 ms | p99 ms |\n|---|---:|---:|---:|\n");
    for h in &report.handshake {
        md.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} |\n",
            h.backend, h.samples, h.p50_ms, h.p99_ms
        ));
    }
    std::fs::write(plan.out.join("BENCHMARKS.generated.md"), md)?;
    println!(
        "wrote {} and {}",
        plan.out.join("BENCHMARKS.generated.md").display(),
        dir.join(name).display()
    );
    Ok(())
}
