//! The gateway's shared state: everything a call needs, built once in [`crate::serve`].

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota};
use signaalpoort_core::access_log::{CheckpointSigner, RecordDraft, TrustPolicy};
use signaalpoort_core::{Oin, PseudonymKey};
use signaalpoort_store::{AlertDraft, AlertKind, Store};
use signaalpoort_tls::ReloadableTls;
use time::OffsetDateTime;

use crate::clock::Clock;
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::registry::Registry;

pub struct Gateway {
    pub store: Store,
    pub registry: Registry,
    pub pseudonyms: PseudonymKey,
    /// Signs checkpoints; a key file by default (see `keys`), any [`CheckpointSigner`] fits.
    pub signer: Arc<dyn CheckpointSigner>,
    /// Why the access log cannot be vouched for (tree inconsistent with the last checkpoint,
    /// records altered): while set, no checkpoint is signed and `/readyz` says why.
    pub log_fault: Mutex<Option<String>>,
    /// The configured witnesses (see `witness`).
    pub witnesses: Vec<crate::witness::WitnessPeer>,
    pub clock: Arc<dyn Clock>,
    pub config: Config,
    /// For per-call revocation checks; `None` only in tests that bypass TLS.
    pub tls: Option<Arc<ReloadableTls>>,
    pub metrics: Arc<Metrics>,
    pub volume: VolumeMonitor,
    pub limiter: AgencyLimiter,
    /// Flips to true on shutdown: streams end with UNAVAILABLE so clients reconnect elsewhere.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    pub streams: StreamCounter,
    /// One delivery at a time per receiving agency, so its cursors are numbered in the order they
    /// are sent (see services::notifications).
    pub deliveries: DeliveryLocks,
}

/// Per-agency locks around reading and numbering notifications.
#[derive(Default)]
pub struct DeliveryLocks(Mutex<HashMap<Oin, Arc<tokio::sync::Mutex<()>>>>);

impl DeliveryLocks {
    pub async fn lock(&self, oin: &Oin) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(oin.clone()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Signs a checkpoint over the Merkle tree, if it grew and is consistent with the last one.
    /// A tree that is not stops all signing: the fault is kept, reported by `/readyz` and
    /// raised as an alert for the auditors.
    pub async fn write_checkpoint(&self) -> Result<bool, signaalpoort_store::StoreError> {
        if let Some(fault) = self.log_fault() {
            return Err(signaalpoort_store::StoreError::TreeInconsistent(fault));
        }
        let now = self.clock.now();
        match self.store.checkpoint(self.signer.as_ref(), now).await {
            Ok(written) => {
                if let Some(cp) = &written {
                    self.metrics.checkpoint_written(now.unix_timestamp());
                    if !self.witnesses.is_empty() {
                        let cosigned = crate::witness::collect_cosignatures(self, cp).await;
                        if cosigned < self.witness_quorum() {
                            tracing::warn!(
                                size = cp.tree_size,
                                cosigned,
                                quorum = self.witness_quorum(),
                                "checkpoint not witnessed by a quorum"
                            );
                        }
                    }
                }
                Ok(written.is_some())
            }
            Err(signaalpoort_store::StoreError::TreeInconsistent(why)) => {
                self.raise_log_fault(why.clone()).await;
                Err(signaalpoort_store::StoreError::TreeInconsistent(why))
            }
            Err(e) => Err(e),
        }
    }

    /// How many witnesses must cosign (default: all configured).
    pub fn witness_quorum(&self) -> usize {
        self.config
            .audit
            .witness_quorum
            .unwrap_or(self.witnesses.len())
    }

    /// Alerts the auditors that a witness refused a checkpoint or cannot be reached.
    pub async fn witness_alert(&self, witness: &str, why: &str) {
        tracing::error!(witness, reason = why, "witness did not cosign");
        let mut record = crate::system_record(self.now(), "WitnessRefused", "WITNESS_REFUSED");
        record.decision = signaalpoort_core::access_log::DecisionCode::Deny;
        let alert = AlertDraft {
            kind: AlertKind::WitnessRefused,
            detail: format!("witness {witness}: {why}"),
        };
        if let Err(e) = self.store.log_only(record, vec![alert]).await {
            tracing::error!(error = %e, "could not record the witness refusal");
        }
    }

    /// The policy the gateway checks its own log with: its own key, no witnesses required.
    pub fn own_policy(&self) -> TrustPolicy {
        TrustPolicy {
            log_key: self.signer.verifier_key(),
            witnesses: Vec::new(),
            quorum: 0,
        }
    }

    pub fn log_fault(&self) -> Option<String> {
        self.log_fault
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records that the log cannot be vouched for, once, and alerts the auditors.
    pub async fn raise_log_fault(&self, why: String) {
        {
            let mut fault = self.log_fault.lock().unwrap_or_else(|p| p.into_inner());
            if fault.is_some() {
                return;
            }
            *fault = Some(why.clone());
        }
        tracing::error!(reason = %why, "access log is not consistent with its last checkpoint; not signing");
        let mut record = crate::system_record(self.now(), "AccessLogFault", "LOG_INCONSISTENT");
        record.decision = signaalpoort_core::access_log::DecisionCode::Deny;
        let alert = AlertDraft {
            kind: AlertKind::AccessLogFault,
            detail: why,
        };
        if let Err(e) = self.store.log_only(record, vec![alert]).await {
            tracing::error!(error = %e, "could not record the access-log fault");
        }
    }
}

/// Per-agency call rate (token bucket), RESOURCE_EXHAUSTED with retry info when exceeded.
pub struct AgencyLimiter(DefaultKeyedRateLimiter<Oin>);

impl AgencyLimiter {
    pub fn new(per_second: u32, burst: u32) -> AgencyLimiter {
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(per_second);
        AgencyLimiter(governor::RateLimiter::keyed(
            Quota::per_second(per_second).allow_burst(burst),
        ))
    }

    pub fn check(&self, oin: &Oin) -> Result<(), ApiError> {
        self.0.check_key(oin).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            ApiError::ResourceExhausted {
                retry_after: wait.max(Duration::from_millis(1)),
                what: "the agency's call rate limit was exceeded; retry after the indicated delay"
                    .to_owned(),
            }
        })
    }
}

/// Counts open streams per agency, to cap them.
#[derive(Default)]
pub struct StreamCounter(Mutex<HashMap<Oin, u32>>);

pub struct StreamSlot {
    counter: Arc<Gateway>,
    oin: Oin,
}

impl StreamCounter {
    pub fn acquire(gw: &Arc<Gateway>, oin: &Oin) -> Result<StreamSlot, ApiError> {
        let max = gw.config.limits.max_streams_per_agency;
        let mut map = gw.streams.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(oin.clone()).or_default();
        if *n >= max {
            return Err(ApiError::ResourceExhausted {
                retry_after: Duration::from_secs(5),
                what: format!("at most {max} concurrent streams per agency"),
            });
        }
        *n += 1;
        Ok(StreamSlot {
            counter: gw.clone(),
            oin: oin.clone(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut map = self
            .counter
            .streams
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.oin) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Raises an alert when one actor, or one agency certificate, touches more than `threshold` distinct
/// persons within `window`. Per certificate as well as per actor: the actor id is the caller's to
/// choose, so a fresh id per lookup must not hide the volume. Per process: with several replicas
/// each watches its own share (documented in ARCHITECTURE.md).
pub struct VolumeMonitor {
    threshold: usize,
    window: time::Duration,
    seen: Mutex<HashMap<(String, String), ActorWindow>>,
}

/// One actor's touches within the window, with a running count per person so a call costs O(1)
/// however many persons the window holds. Persons are kept as 64-bit digests of their pseudonym.
#[derive(Default)]
struct ActorWindow {
    touches: VecDeque<(OffsetDateTime, u64)>,
    per_person: HashMap<u64, u32>,
    alerted_until: Option<OffsetDateTime>,
}

fn person_digest(subject: &str) -> u64 {
    use std::hash::Hasher;
    // Fixed keys: the digest only has to tell persons apart, the same way on every call.
    let mut h = std::hash::DefaultHasher::new();
    h.write(subject.as_bytes());
    h.finish()
}

impl VolumeMonitor {
    pub fn new(threshold: u32, window: Duration) -> VolumeMonitor {
        VolumeMonitor {
            threshold: threshold as usize,
            window: time::Duration::try_from(window).unwrap_or(time::Duration::HOUR),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Notes the persons a call touched; returns an alert the first time the threshold is crossed
    /// within a window.
    pub fn observe(&self, record: &RecordDraft) -> Option<AlertDraft> {
        if record.subjects.is_empty() {
            return None;
        }
        let certificate = if record.cert_fingerprint.is_empty() {
            record.agency_oin.clone()
        } else {
            record.cert_fingerprint.clone()
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let by_actor = (!record.actor_id.is_empty()).then(|| {
            self.observe_key(
                &mut seen,
                (record.agency_oin.clone(), record.actor_id.clone()),
                record,
                "actor",
            )
        });
        let by_certificate = self.observe_key(
            &mut seen,
            ("certificate".to_owned(), certificate),
            record,
            "agency certificate",
        );
        by_actor.flatten().or(by_certificate)
    }

    fn observe_key(
        &self,
        seen: &mut HashMap<(String, String), ActorWindow>,
        key: (String, String),
        record: &RecordDraft,
        what: &str,
    ) -> Option<AlertDraft> {
        let w = seen.entry(key).or_default();
        let start = record.time - self.window;
        while let Some((_, person)) = w.touches.front().copied().filter(|(t, _)| *t < start) {
            w.touches.pop_front();
            if let std::collections::hash_map::Entry::Occupied(mut e) = w.per_person.entry(person) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
        for s in &record.subjects {
            let person = person_digest(s);
            w.touches.push_back((record.time, person));
            *w.per_person.entry(person).or_default() += 1;
        }
        let n = w.per_person.len();
        if n > self.threshold && w.alerted_until.is_none_or(|t| t < record.time) {
            w.alerted_until = Some(record.time + self.window);
            return Some(AlertDraft {
                kind: AlertKind::UnusualVolume,
                detail: format!(
                    "{n} persons within {} minutes by one {what} (threshold {})",
                    self.window.whole_minutes(),
                    self.threshold
                ),
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(at: OffsetDateTime, actor: &str, person: &str) -> RecordDraft {
        let mut r = crate::system_record(at, "QueryInvolvement", "CONSENT_SHARING");
        r.agency_oin = "00000099001234560002".into();
        r.actor_id = actor.into();
        r.subjects = vec![person.into()];
        r
    }

    #[test]
    fn unusual_volume_alerts_once_per_window_on_distinct_persons() {
        let monitor = VolumeMonitor::new(3, Duration::from_secs(600));
        let t0 = time::macros::datetime!(2026-05-04 10:00 UTC);
        // The same person again and again is not unusual.
        for i in 0..10 {
            assert!(monitor
                .observe(&touch(t0 + time::Duration::seconds(i), "w-1", "p1"))
                .is_none());
        }
        assert!(monitor.observe(&touch(t0, "w-1", "p2")).is_none());
        assert!(monitor.observe(&touch(t0, "w-1", "p3")).is_none());
        // A fourth distinct person within ten minutes crosses the threshold of three: one alert.
        let alert = monitor
            .observe(&touch(t0 + time::Duration::minutes(1), "w-1", "p4"))
            .expect("alert");
        assert_eq!(alert.kind, AlertKind::UnusualVolume);
        assert!(
            alert.detail.starts_with("4 persons within 10 minutes"),
            "{}",
            alert.detail
        );
        assert!(monitor
            .observe(&touch(t0 + time::Duration::minutes(2), "w-1", "p5"))
            .is_none());
        // Another actor has its own window, but shares the agency certificate's.
        assert!(monitor.observe(&touch(t0, "w-2", "p1")).is_none());
        // After the window has passed, earlier touches no longer count.
        let later = t0 + time::Duration::minutes(30);
        for p in ["p6", "p7", "p8"] {
            assert!(monitor.observe(&touch(later, "w-1", p)).is_none());
        }
        assert!(monitor.observe(&touch(later, "w-1", "p9")).is_some());
    }

    #[test]
    fn a_fresh_actor_per_lookup_still_alerts_per_certificate() {
        let monitor = VolumeMonitor::new(3, Duration::from_secs(600));
        let t0 = time::macros::datetime!(2026-05-04 10:00 UTC);
        let alerts: Vec<_> = (0..5)
            .filter_map(|i| monitor.observe(&touch(t0, &format!("fresh-{i}"), &format!("p{i}"))))
            .collect();
        assert_eq!(alerts.len(), 1);
        assert!(
            alerts[0].detail.contains("by one agency certificate"),
            "{}",
            alerts[0].detail
        );
    }
}
