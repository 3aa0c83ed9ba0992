//! The tracker probe: a background loop that asks the tracker for `ClusterInfo` every
//! `tracker_probe_interval`. Its answer feeds gRPC health, `/readyz`, `Discover`'s
//! fallback and the page header. The webserver is ready once the tracker has answered,
//! and stops being ready when it has not answered for `tracker_unreachable_after`:
//! a single slow probe does not flap health.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_common::grpc::Health;
use shoal_proto::v1 as pb;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::AppState;

/// The probe's view of the tracker, shared with every handler.
#[derive(Default)]
pub struct TrackerStatus {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    ready: bool,
    last_ok: Option<Instant>,
    info: Option<pb::ClusterInfoResponse>,
    last_error: Option<String>,
}

impl TrackerStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tracker answered recently enough to serve.
    pub fn ready(&self) -> bool {
        self.lock().ready
    }

    /// The last `ClusterInfo` the tracker sent, if any.
    pub fn info(&self) -> Option<pb::ClusterInfoResponse> {
        self.lock().info.clone()
    }

    /// Why the last probe failed, while the tracker is failing.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// Record a fresh answer (also from `Discover`): the tracker is up.
    pub fn record_ok(&self, info: pb::ClusterInfoResponse) {
        let mut g = self.lock();
        g.last_ok = Some(Instant::now());
        g.info = Some(info);
        g.last_error = None;
    }

    /// Record a failed probe; returns whether the webserver should still serve.
    fn record_err(&self, error: String, unreachable_after: Duration) -> bool {
        let mut g = self.lock();
        g.last_error = Some(error);
        should_serve(false, g.last_ok, Instant::now(), unreachable_after)
    }

    fn set_ready(&self, ready: bool) {
        self.lock().ready = ready;
    }
}

/// Whether to serve after a probe: the probe succeeded, or the last success is no
/// older than `unreachable_after`. Before the first success, never.
pub fn should_serve(
    ok: bool,
    last_ok: Option<Instant>,
    now: Instant,
    unreachable_after: Duration,
) -> bool {
    ok || last_ok.is_some_and(|t| now.saturating_duration_since(t) <= unreachable_after)
}

/// Probe until `shutdown`, flipping `health` (and readiness) on each change.
pub async fn run(state: Arc<AppState>, health: Health, shutdown: CancellationToken) {
    let every = state.cfg.tracker_probe_interval;
    let after = state.cfg.tracker_unreachable_after;
    // A hung tracker counts as a failed probe, but never sooner than one interval.
    let timeout = after.min(Duration::from_secs(5)).max(every);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut serving = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now_serving = match tokio::time::timeout(timeout, state.client.cluster_info()).await {
            Ok(Ok(info)) => {
                state.tracker.record_ok(info);
                true
            }
            Ok(Err(e)) => state.tracker.record_err(e.to_string(), after),
            Err(_) => state
                .tracker
                .record_err(format!("no answer within {timeout:?}"), after),
        };
        if now_serving != serving {
            if now_serving {
                tracing::info!(tracker = %state.cfg.tracker_url, "tracker reachable: serving");
            } else {
                let why = state.tracker.last_error().unwrap_or_default();
                tracing::warn!(tracker = %state.cfg.tracker_url, error = %why, unreachable_for = ?after, "tracker unreachable: not serving");
            }
            serving = now_serving;
            state.tracker.set_ready(serving);
            health.set(serving).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn serves_only_after_an_answer_and_until_the_grace_runs_out() {
        let after = Duration::from_secs(2);
        let t0 = Instant::now();
        assert!(
            !should_serve(false, None, t0, after),
            "never before the first answer"
        );
        assert!(should_serve(true, None, t0, after));
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(
            should_serve(false, Some(t0), Instant::now(), after),
            "one missed probe does not flap"
        );
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(
            !should_serve(false, Some(t0), Instant::now(), after),
            "unreachable longer than the grace"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn status_records_answers_and_failures() {
        let s = TrackerStatus::default();
        assert!(!s.record_err("refused".into(), Duration::from_secs(1)));
        assert_eq!(s.last_error().as_deref(), Some("refused"));
        s.record_ok(pb::ClusterInfoResponse {
            live_peers: 3,
            ..Default::default()
        });
        assert_eq!(s.info().map(|i| i.live_peers), Some(3));
        assert!(s.last_error().is_none());
        assert!(s.record_err("refused".into(), Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!s.record_err("refused".into(), Duration::from_secs(1)));
    }
}
