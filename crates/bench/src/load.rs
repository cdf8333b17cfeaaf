//! The load generator: `concurrency` tasks over `connections` channels, each calling in a loop for a
//! warm-up and then a measured window; latencies into an HDR histogram.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub concurrency: usize,
    pub calls: u64,
    pub errors: u64,
    pub seconds: f64,
    pub calls_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub first_error: Option<String>,
}

/// Runs `call(worker, sequence)` from `concurrency` workers. `sequence` is unique across workers,
/// so a call can make fresh data (a new BSN) from it.
pub async fn run<F, Fut>(
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
    call: F,
) -> LoadResult
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let call = Arc::new(call);
    let sequence = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let call = call.clone();
        let sequence = sequence.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let (mut calls, mut errors, mut first_error) = (0u64, 0u64, None);
            loop {
                let n = sequence.fetch_add(1, Ordering::Relaxed);
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let result = call(worker, n).await;
                let t1 = Instant::now();
                if t0 >= measure_from && t1 <= end {
                    calls += 1;
                    let _ = hist.record((t1 - t0).as_micros().max(1) as u64);
                    if let Err(e) = result {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (hist, calls, errors, first_error)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let (mut calls, mut errors, mut first_error) = (0, 0, None);
    for t in tasks {
        if let Ok((h, c, e, fe)) = t.await {
            let _ = hist.add(&h);
            calls += c;
            errors += e;
            if first_error.is_none() {
                first_error = fe;
            }
        }
    }
    let seconds = measure.as_secs_f64();
    LoadResult {
        concurrency,
        calls,
        errors,
        seconds,
        calls_per_second: calls as f64 / seconds,
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        p999_ms: hist.value_at_quantile(0.999) as f64 / 1000.0,
        first_error,
    }
}

/// CPU seconds (user + system) and peak resident memory of a process, from /proc.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcStats {
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
}

pub fn proc_stats(pid: u32) -> ProcStats {
    // Clock ticks are 100 Hz on Linux x86_64 (USER_HZ); /proc reports in them.
    let cpu_seconds = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0);
    let peak_rss_mib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb / 1024.0)
        })
        .unwrap_or(0.0);
    ProcStats {
        cpu_seconds,
        peak_rss_mib,
    }
}
