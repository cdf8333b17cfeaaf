//! The Signaalpoort gateway. [`start`] is the composition root: it wires store, keys, TLS, services,
//! health, reflection, the admin listener and background jobs, in that order, and returns a handle
//! that shuts it all down gracefully.
//!
//! Where to start reading: [`call`] (how every RPC is identified, decided and logged), then
//! `services/`.

pub mod admin;
pub mod basis;
pub mod call;
pub mod clock;
pub mod config;
pub mod convert;
pub mod edge;
pub mod error;
pub mod gateway;
pub mod keys;
pub mod metrics;
pub mod registry;
pub mod report;
pub mod services;
pub mod witness;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use signaalpoort_api::v1::audit_service_server::AuditServiceServer;
use signaalpoort_api::v1::consent_service_server::ConsentServiceServer;
use signaalpoort_api::v1::coordination_service_server::CoordinationServiceServer;
use signaalpoort_api::v1::household_service_server::HouseholdServiceServer;
use signaalpoort_api::v1::notification_service_server::NotificationServiceServer;
use signaalpoort_api::v1::signal_service_server::SignalServiceServer;
use signaalpoort_core::access_log::{DecisionCode, ProblemKind, RecordDraft};
use signaalpoort_store::{Effect, Mutation, Store, StoreOptions, WriteRequest};
use signaalpoort_tls::{ReloadableTls, TlsFiles};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use gateway::Gateway;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store: {0}")]
    Store(#[from] signaalpoort_store::StoreError),
    #[error("keys: {0}")]
    Keys(#[from] keys::KeyError),
    #[error("tls: {0}")]
    Tls(#[from] signaalpoort_tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A running gateway.
pub struct RunningGateway {
    pub grpc_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    shutdown_tx: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    health: tonic_health::server::HealthReporter,
    jobs: Vec<JoinHandle<()>>,
}

impl RunningGateway {
    /// Graceful shutdown: report NOT_SERVING, end streams (UNAVAILABLE, so clients reconnect),
    /// stop accepting, let in-flight calls finish within the grace period, write a final checkpoint.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        set_health(&self.health, tonic_health::ServingStatus::NotServing).await;
        let _ = self.shutdown_tx.send(true);
        let grace = Duration::from_secs(self.gateway.config.server.shutdown_grace_secs);
        match tokio::time::timeout(grace, self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "server ended with an error"),
            Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
            Err(_) => tracing::warn!(
                grace_secs = grace.as_secs(),
                "in-flight calls did not finish within the grace period"
            ),
        }
        for job in self.jobs {
            job.abort();
        }
        match self.gateway.write_checkpoint().await {
            Ok(_) => tracing::info!("final checkpoint written"),
            Err(e) => tracing::error!(error = %e, "final checkpoint failed"),
        }
        self.gateway.store.close().await;
    }

    /// Resolves when shutdown was requested from outside (signal handler) — for `serve`.
    pub fn shutdown_requested(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }
}

/// Builds and starts the gateway.
pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<RunningGateway, StartError> {
    signaalpoort_tls::install_crypto_provider();
    std::fs::create_dir_all(&config.server.data_dir).map_err(|source| StartError::DataDir {
        path: config.server.data_dir.clone(),
        source,
    })?;
    let pseudonyms =
        keys::load_or_create_pseudonym_key(&keys::pseudonym_key_path(&config.server.data_dir))?;
    let signer = Arc::new(keys::load_or_create_checkpoint_key(
        &keys::checkpoint_key_path(&config.server.data_dir),
        &config.audit.log_origin,
    )?);
    let store = Store::open(
        &config.database_url(),
        StoreOptions {
            min_free_bytes: config.server.min_free_disk_mib.saturating_mul(1024 * 1024),
            status_of: error::rejection_status,
            ..StoreOptions::default()
        },
    )
    .await?;

    let tls_files = TlsFiles {
        cert_chain: config.tls.cert.clone(),
        private_key: config.tls.key.clone(),
        client_ca: config.tls.client_ca.clone(),
        crls: config.tls.crls.clone(),
    };
    let tls = Arc::new(ReloadableTls::load(tls_files.clone())?);
    let metrics = Arc::new(metrics::Metrics::new());
    metrics.set_certificate_expiry("server", tls.server_cert_not_after_unix());
    metrics.set_certificate_expiry("client_ca", tls.client_ca_not_after_unix());

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let limits = config.limits.clone();
    let gw = Arc::new(Gateway {
        store,
        registry: registry::Registry::from_entries(&config.agencies),
        pseudonyms,
        signer,
        log_fault: std::sync::Mutex::new(None),
        witnesses: config
            .audit
            .witnesses
            .iter()
            .filter_map(|w| {
                signaalpoort_core::access_log::WitnessKey::parse(&w.key)
                    .ok()
                    .map(|k| witness::WitnessPeer::new(w.url.clone(), k))
            })
            .collect(),
        clock,
        volume: gateway::VolumeMonitor::new(
            config.audit.unusual_volume_threshold,
            Duration::from_secs(config.audit.unusual_volume_window_secs),
        ),
        limiter: gateway::AgencyLimiter::new(
            limits.calls_per_second_per_agency,
            limits.burst_per_agency,
        ),
        tls: Some(tls.clone()),
        metrics,
        shutdown: shutdown_rx.clone(),
        streams: gateway::StreamCounter::default(),
        deliveries: gateway::DeliveryLocks::default(),
        config,
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, tonic_health::ServingStatus::Serving).await;
    // Both reflection versions: grpcurl before 1.9 and many stock clients ask v1alpha only.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(signaalpoort_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_error = |e: tonic_reflection::server::Error| {
        StartError::Tls(signaalpoort_tls::TlsError::Config(e.to_string()))
    };
    let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;
    let reflection = reflection().build_v1().map_err(reflection_error)?;

    let listen = gw.config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
    let grpc_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: listen,
        source,
    })?;
    let refusals = gw.metrics.clone();
    let incoming = signaalpoort_tls::tls_incoming_observed(
        listener,
        tls.clone(),
        Duration::from_secs(gw.config.server.handshake_timeout_secs),
        Arc::new(move |refusal| refusals.handshake_refused(refusal)),
    );

    let max = limits.max_message_bytes;
    macro_rules! limited {
        ($server:ty, $svc:expr) => {
            <$server>::new($svc)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max)
        };
    }
    // No `.timeout()`: the edge layer applies the deadline and answers DEADLINE_EXCEEDED.
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(256))
        .layer(edge::EdgeLayer::new(gw.clone()))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(limited!(
            SignalServiceServer<_>,
            services::signals::Signals(gw.clone())
        ))
        .add_service(limited!(
            HouseholdServiceServer<_>,
            services::households::Households(gw.clone())
        ))
        .add_service(limited!(
            NotificationServiceServer<_>,
            services::notifications::Notifications(gw.clone())
        ))
        .add_service(limited!(
            ConsentServiceServer<_>,
            services::consent::Consents(gw.clone())
        ))
        .add_service(limited!(
            AuditServiceServer<_>,
            services::audit::Audit(gw.clone())
        ))
        .add_service(limited!(
            CoordinationServiceServer<_>,
            services::coordination::Coordination(gw.clone())
        ));
    let mut stop = shutdown_rx.clone();
    let server = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    });

    let mut jobs = Vec::new();
    let admin_addr = match gw.config.server.admin_listen {
        Some(addr) => {
            let l = admin::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?;
            let bound = l
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?;
            jobs.push(admin::spawn(l, gw.clone()));
            Some(bound)
        }
        None => None,
    };
    match signaalpoort_tls::spawn_reload_watcher(
        tls.clone(),
        &tls_files,
        Duration::from_millis(500),
    ) {
        Ok(h) => jobs.push(h),
        Err(e) => {
            tracing::warn!(error = %e, "certificate reload watcher not started; SIGHUP and file changes will not reload")
        }
    }
    check_log_at_start(&gw).await;
    jobs.push(spawn_checkpoints(gw.clone()));
    jobs.push(spawn_purge(gw.clone()));
    jobs.push(spawn_reminders(gw.clone()));
    jobs.push(spawn_health_watch(gw.clone(), health.clone()));
    tracing::info!(%grpc_addr, admin = ?admin_addr, store = gw.store.kind(), agencies = gw.registry.len(), "signaalpoort listening");
    Ok(RunningGateway {
        grpc_addr,
        admin_addr,
        gateway: gw,
        shutdown_tx,
        server,
        health,
        jobs,
    })
}

/// Before the key vouches for anything new, the whole stored log (records, tree, the gateway's
/// own checkpoints) must verify. A missing checkpoint is not a fault here (a crash before the
/// first one); tampering is, and then nothing is signed and `/readyz` says why.
async fn check_log_at_start(gw: &Gateway) {
    match gw.store.verify_log(&gw.own_policy(), None).await {
        Ok(report) => match report.first_problem {
            Some(p)
                if !matches!(
                    p.kind,
                    ProblemKind::NoCheckpoints | ProblemKind::NotWitnessed
                ) =>
            {
                gw.raise_log_fault(p.to_string()).await
            }
            _ => {}
        },
        Err(e) => gw.raise_log_fault(e.to_string()).await,
    }
}

fn spawn_checkpoints(gw: Arc<Gateway>) -> JoinHandle<()> {
    tokio::spawn(async move {
        // The first after one interval: the log was just verified at start, and a checkpoint
        // signed at an unpredictable moment right after start helps no one.
        let period = Duration::from_secs(gw.config.audit.checkpoint_interval_secs);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tick.tick().await;
            if let Err(e) = gw.write_checkpoint().await {
                tracing::error!(error = %e, "checkpoint failed");
            }
        }
    })
}

fn spawn_purge(gw: Arc<Gateway>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick =
            tokio::time::interval(Duration::from_secs(gw.config.signals.purge_interval_secs));
        loop {
            tick.tick().await;
            match purge_expired(&gw).await {
                Ok((signals, households)) if signals + households > 0 => {
                    tracing::info!(signals, households, "purged expired data")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "purge failed"),
            }
            match purge_access_log(&gw).await {
                Ok(0) => {}
                Ok(records) => tracing::info!(records, "access-log records past retention removed"),
                Err(e) => tracing::error!(error = %e, "access-log retention purge failed"),
            }
        }
    })
}

fn spawn_reminders(gw: Arc<Gateway>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick =
            tokio::time::interval(Duration::from_secs(gw.config.signals.purge_interval_secs));
        loop {
            tick.tick().await;
            match send_coordination_reminders(&gw).await {
                Ok(0) => {}
                Ok(households) => tracing::info!(households, "coordination reminders sent"),
                Err(e) => tracing::error!(error = %e, "coordination reminders failed"),
            }
        }
    })
}

/// Who may be reminded that a household's match has no coordinator: an involved agency that the
/// family's consent for case coordination lets know of another involved agency (on some member's
/// own consent, per the one rule). Anyone else would learn from the reminder that others are involved.
async fn reminder_recipients(
    gw: &Gateway,
    signals: &[signaalpoort_store::SignalRow],
    now: time::OffsetDateTime,
) -> Result<std::collections::BTreeSet<signaalpoort_core::Oin>, signaalpoort_store::StoreError> {
    use signaalpoort_core::consent::consent_covering;
    let mut facts = basis::Facts::new(gw.store.read());
    let mut out = std::collections::BTreeSet::new();
    for viewer in signals {
        let Some(v) = gw.registry.get(&viewer.agency) else {
            continue;
        };
        for other in signals.iter().filter(|s| s.agency != viewer.agency) {
            let Some(a) = gw.registry.get(&other.agency) else {
                continue;
            };
            let f = facts.of(&other.subject).await?;
            if consent_covering(
                &f.consents,
                &f.person,
                v,
                Some(a),
                signaalpoort_core::Purpose::CaseCoordination,
                now,
            )
            .is_some()
            {
                out.insert(viewer.agency.clone());
                break;
            }
        }
    }
    Ok(out)
}

/// Reminds the involved agencies of every household with a match but no coordinator for longer
/// than configured (shorter with a Veilig Thuis or safety signal), each as one logged system action.
/// Returns the number of households reminded.
pub async fn send_coordination_reminders(
    gw: &Gateway,
) -> Result<u32, signaalpoort_store::StoreError> {
    use signaalpoort_core::coordination::{reconcile, reminder_due, ReminderRule};
    let now = gw.now();
    let c = &gw.config.coordination;
    let rule = ReminderRule {
        after: time::Duration::days(i64::from(c.reminder_after_days)),
        after_with_safety_signal: time::Duration::days(i64::from(
            c.reminder_after_days_with_safety_signal,
        )),
    };
    let mut reminded = 0;
    for household_id in gw.store.read().households_with_match(now).await? {
        let signals = gw
            .store
            .read()
            .household_signals(&household_id, now)
            .await?;
        // The match began when the second agency became involved.
        let mut first_by_agency: std::collections::BTreeMap<String, time::OffsetDateTime> =
            Default::default();
        for s in &signals {
            let e = first_by_agency
                .entry(s.agency.to_string())
                .or_insert(s.registered_at);
            *e = (*e).min(s.registered_at);
        }
        let mut starts: Vec<_> = first_by_agency.values().copied().collect();
        starts.sort();
        let Some(match_since) = starts.get(1).copied() else {
            continue;
        };
        let safety = signals.iter().any(|s| {
            s.category == signaalpoort_core::Category::Safety
                || gw
                    .registry
                    .get(&s.agency)
                    .is_some_and(|a| a.role == signaalpoort_core::Role::VeiligThuis)
        });
        let stored = gw.store.read().coordination(&household_id).await?;
        let involved = signals.iter().map(|s| s.agency.clone()).collect();
        let (state, _) = reconcile(&stored.state, &involved);
        if !reminder_due(
            rule,
            match_since,
            state.coordinator.is_some(),
            safety,
            stored.last_reminder,
            now,
        ) {
            continue;
        }
        let recipients = reminder_recipients(gw, &signals, now).await?;
        if recipients.is_empty() {
            continue;
        }
        let mut record = system_record(now, "RemindCoordination", "NO_COORDINATOR");
        record.household_id = household_id.clone();
        gw.store
            .execute(WriteRequest {
                mutation: Mutation::RemindCoordination {
                    household_id,
                    recipients,
                    now,
                },
                idempotency: None,
                record,
                alerts: Vec::new(),
            })
            .await?;
        reminded += 1;
    }
    Ok(reminded)
}

/// Deletes expired signals and dissolved households, as one logged system action.
pub async fn purge_expired(gw: &Gateway) -> Result<(u64, u64), signaalpoort_store::StoreError> {
    let now = gw.now();
    if !gw.store.read().purge_due(now).await? {
        return Ok((0, 0));
    }
    let record = system_record(now, "PurgeExpired", "RETENTION");
    let committed = gw
        .store
        .execute(WriteRequest {
            mutation: Mutation::PurgeExpired { now },
            idempotency: None,
            record,
            alerts: Vec::new(),
        })
        .await?;
    Ok(match committed.outcome {
        Ok(Effect::Purged {
            signals,
            households,
        }) => (signals, households),
        _ => (0, 0),
    })
}

/// Removes access-log records older than the retention period (independent of signal expiry), as
/// one logged system action; the remaining chain verifies from the kept anchor.
pub async fn purge_access_log(gw: &Gateway) -> Result<u64, signaalpoort_store::StoreError> {
    let now = gw.now();
    let before = now - time::Duration::days(i64::from(gw.config.audit.retention_days));
    if !gw.store.read().log_has_records_before(before).await? {
        return Ok(0);
    }
    let committed = gw
        .store
        .execute(WriteRequest {
            mutation: Mutation::PurgeAccessLog { before },
            idempotency: None,
            record: system_record(now, "PurgeAccessLog", "RETENTION"),
            alerts: Vec::new(),
        })
        .await?;
    Ok(match committed.outcome {
        Ok(Effect::LogPurged { records, .. }) => records,
        _ => 0,
    })
}

/// A record for something the gateway does by itself (no caller).
pub fn system_record(now: time::OffsetDateTime, action: &str, reason: &str) -> RecordDraft {
    RecordDraft {
        time: now,
        agency_oin: String::new(),
        role: None,
        actor_id: "system".to_owned(),
        action: action.to_owned(),
        subjects: Vec::new(),
        household_id: String::new(),
        purpose: None,
        basis: None,
        decision: DecisionCode::Allow,
        reason: reason.to_owned(),
        status_code: 0,
        request_id: String::new(),
        cert_fingerprint: String::new(),
        justification: String::new(),
        flagged_for_review: false,
        trace_id: String::new(),
        span_id: String::new(),
        object_id: String::new(),
    }
}

/// The services grpc.health.v1 answers for, besides the whole server ("").
pub const SERVICES: [&str; 6] = [
    <SignalServiceServer<services::signals::Signals> as tonic::server::NamedService>::NAME,
    <HouseholdServiceServer<services::households::Households> as tonic::server::NamedService>::NAME,
    <NotificationServiceServer<services::notifications::Notifications> as tonic::server::NamedService>::NAME,
    <ConsentServiceServer<services::consent::Consents> as tonic::server::NamedService>::NAME,
    <AuditServiceServer<services::audit::Audit> as tonic::server::NamedService>::NAME,
    <CoordinationServiceServer<services::coordination::Coordination> as tonic::server::NamedService>::NAME,
];

/// Sets the whole server and every service to one status: they share the database and the log,
/// so none can serve while the others cannot.
async fn set_health(
    health: &tonic_health::server::HealthReporter,
    status: tonic_health::ServingStatus,
) {
    health.set_service_status("", status).await;
    for name in SERVICES {
        health.set_service_status(name, status).await;
    }
}

/// grpc.health.v1 follows the database: NOT_SERVING while it cannot be reached.
fn spawn_health_watch(
    gw: Arc<Gateway>,
    health: tonic_health::server::HealthReporter,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        let mut serving = true;
        loop {
            tick.tick().await;
            let ok = admin::readiness(&gw).await.is_ok();
            if ok != serving {
                serving = ok;
                let status = if ok {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                set_health(&health, status).await;
                tracing::warn!(serving = ok, "health status changed");
            }
        }
    })
}
