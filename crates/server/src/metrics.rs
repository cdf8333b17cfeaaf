//! Prometheus metrics, served on the admin port. Names carry the `signaalpoort_` prefix and base
//! units; labels are methods, codes and reasons — never a person, subject or agency.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabel {
    certificate: String,
}

pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: Family<MethodLabel, Histogram>,
    decisions: Family<ReasonLabel, Counter>,
    log_appends: Counter,
    log_append_latency: Histogram,
    watch_streams: Gauge,
    cert_expiry: Family<CertLabel, Gauge>,
    handshake_refusals: Family<ReasonLabel, Counter>,
    last_checkpoint_unix: AtomicI64,
    checkpoint_age: Gauge,
    tasks: Gauge,
    checkpoint_cosignatures: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("signaalpoort");
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Family::<MethodLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        let decisions = Family::<ReasonLabel, Counter>::default();
        let log_appends = Counter::default();
        let log_append_latency = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let watch_streams = Gauge::default();
        let cert_expiry = Family::<CertLabel, Gauge>::default();
        let checkpoint_age = Gauge::default();
        let tasks = Gauge::default();
        registry.register(
            "runtime_tasks_alive",
            "Tokio tasks alive in the gateway's runtime (calls, streams, connections, jobs)",
            tasks.clone(),
        );
        let handshake_refusals = Family::<ReasonLabel, Counter>::default();
        // Every reason from the start, so an alert can compare against zero.
        for r in signaalpoort_tls::HandshakeRefusal::ALL {
            let _ = handshake_refusals.get_or_create(&ReasonLabel {
                reason: r.reason().to_owned(),
            });
        }
        registry.register(
            "tls_handshake_refusals",
            "TLS handshakes refused, by reason (certificate problem, protocol version, cipher suites, timeout)",
            handshake_refusals.clone(),
        );
        let checkpoint_cosignatures = Gauge::default();
        registry.register(
            "grpc_calls",
            "gRPC calls by method and status code",
            calls.clone(),
        );
        registry.register(
            "grpc_call_duration_seconds",
            "gRPC call latency",
            latency.clone(),
        );
        registry.register(
            "policy_decisions",
            "Calls by logged reason (allowing rule or deny reason)",
            decisions.clone(),
        );
        registry.register(
            "access_log_appends",
            "Access-log records committed",
            log_appends.clone(),
        );
        registry.register(
            "access_log_append_duration_seconds",
            "Time from submitting a record to its commit",
            log_append_latency.clone(),
        );
        registry.register(
            "watch_streams_open",
            "Open notification and alert streams",
            watch_streams.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "Not-after of the server certificate and client CA, unix seconds",
            cert_expiry.clone(),
        );
        registry.register(
            "checkpoint_age_seconds",
            "Seconds since the last signed checkpoint",
            checkpoint_age.clone(),
        );
        registry.register(
            "checkpoint_cosignatures",
            "Witness cosignatures collected for the newest checkpoint",
            checkpoint_cosignatures.clone(),
        );
        Metrics {
            registry,
            calls,
            latency,
            decisions,
            log_appends,
            log_append_latency,
            watch_streams,
            cert_expiry,
            handshake_refusals,
            last_checkpoint_unix: AtomicI64::new(0),
            checkpoint_age,
            tasks,
            checkpoint_cosignatures,
        }
    }

    pub fn observe_call(&self, method: &str, code: tonic::Code, elapsed: Duration) {
        self.calls
            .get_or_create(&CallLabels {
                method: method.to_owned(),
                code: format!("{code:?}"),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabel {
                method: method.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_decision(&self, reason: &str) {
        self.decisions
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn handshake_refused(&self, refusal: signaalpoort_tls::HandshakeRefusal) {
        self.handshake_refusals
            .get_or_create(&ReasonLabel {
                reason: refusal.reason().to_owned(),
            })
            .inc();
    }

    pub fn log_appended(&self) {
        self.log_appends.inc();
    }

    pub fn observe_append_latency(&self, elapsed: Duration) {
        self.log_append_latency.observe(elapsed.as_secs_f64());
    }

    pub fn stream_opened(&self) -> StreamGuard {
        self.watch_streams.inc();
        StreamGuard(self.watch_streams.clone())
    }

    pub fn set_certificate_expiry(&self, which: &str, unix: i64) {
        self.cert_expiry
            .get_or_create(&CertLabel {
                certificate: which.to_owned(),
            })
            .set(unix);
    }

    pub fn checkpoint_cosigned(&self, cosignatures: u64) {
        self.checkpoint_cosignatures.set(cosignatures as i64);
    }

    pub fn checkpoint_written(&self, unix: i64) {
        self.last_checkpoint_unix.store(unix, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self, now_unix: i64) -> String {
        let last = self.last_checkpoint_unix.load(Ordering::Relaxed);
        self.checkpoint_age
            .set(if last == 0 { -1 } else { now_unix - last });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            self.tasks
                .set(i64::try_from(handle.metrics().num_alive_tasks()).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Decrements the open-streams gauge when a stream ends.
pub struct StreamGuard(Gauge);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
