//! The gateway's shared state: everything a call needs, built once in [`crate::serve`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota};
use signaalpoort_core::access_log::{CheckpointSigner, RecordDraft};
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
    pub signer: CheckpointSigner,
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

    /// Signs a checkpoint over the current head, if it moved.
    pub async fn write_checkpoint(&self) -> Result<bool, signaalpoort_store::StoreError> {
        let now = self.clock.now();
        let signer = &self.signer;
        let written = self
            .store
            .checkpoint(&|size, head| signer.sign(size, head, now))
            .await?;
        if written.is_some() {
            self.metrics.checkpoint_written(now.unix_timestamp());
        }
        Ok(written.is_some())
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

/// Raises an alert when one actor touches more than `threshold` distinct persons within `window`.
/// Per process: with several replicas each watches its own share (documented in ARCHITECTURE.md).
pub struct VolumeMonitor {
    threshold: usize,
    window: time::Duration,
    seen: Mutex<HashMap<(String, String), ActorWindow>>,
}

#[derive(Default)]
struct ActorWindow {
    touches: VecDeque<(OffsetDateTime, String)>,
    alerted_until: Option<OffsetDateTime>,
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
        if record.subjects.is_empty() || record.actor_id.is_empty() {
            return None;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let key = (record.agency_oin.clone(), record.actor_id.clone());
        let w = seen.entry(key).or_default();
        let start = record.time - self.window;
        while w.touches.front().is_some_and(|(t, _)| *t < start) {
            w.touches.pop_front();
        }
        for s in &record.subjects {
            w.touches.push_back((record.time, s.clone()));
        }
        let distinct: HashSet<&String> = w.touches.iter().map(|(_, s)| s).collect();
        let n = distinct.len();
        if n > self.threshold && w.alerted_until.is_none_or(|t| t < record.time) {
            w.alerted_until = Some(record.time + self.window);
            return Some(AlertDraft {
                kind: AlertKind::UnusualVolume,
                detail: format!(
                    "{n} persons within {} minutes (threshold {})",
                    self.window.whole_minutes(),
                    self.threshold
                ),
            });
        }
        None
    }
}
