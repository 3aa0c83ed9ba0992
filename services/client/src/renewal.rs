//! Keeping an upload alive: renewals with proof of progress.

use shoal_proto::v1 as pb;
use tracing::warn;

use crate::{Client, Result};

/// Chunks a renewal shows receipts for: the latest ones (one new receipt is proof).
const RENEW_CHUNKS: usize = 64;

/// Keeps an upload alive while it makes progress: every third of its expiry, the
/// receipts gathered since the last renewal go to the tracker as proof.
pub(crate) struct Renewal {
    /// None: the tracker does not renew (an expiry of 0).
    timer: Option<tokio::time::Interval>,
    /// How many of the stored chunks the tracker has seen receipts for.
    shown: usize,
}

impl Renewal {
    pub(crate) fn new(expires_in_ms: u64) -> Self {
        let every = std::time::Duration::from_millis(expires_in_ms / 3)
            .max(std::time::Duration::from_millis(100));
        Self {
            timer: (expires_in_ms > 0)
                .then(|| tokio::time::interval_at(tokio::time::Instant::now() + every, every)),
            shown: 0,
        }
    }

    /// Ready when a renewal is due (never, without a timer).
    pub(crate) async fn tick(&mut self) {
        match self.timer.as_mut() {
            Some(t) => {
                t.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Show the receipts of chunks stored since the last renewal (the latest ones: one
    /// new receipt is proof). A failed renewal is only logged: the commit says what counts.
    pub(crate) async fn renew(
        &mut self,
        client: &Client,
        upload_id: &str,
        stored: &[pb::ChunkStored],
    ) {
        if stored.len() <= self.shown {
            return;
        }
        let latest = stored[self.shown.max(stored.len().saturating_sub(RENEW_CHUNKS))..].to_vec();
        self.shown = stored.len();
        if let Err(e) = client.renew_upload(upload_id, latest).await {
            warn!(error = %e, "could not renew the upload; it may expire before the commit");
        }
    }
}

impl Client {
    async fn renew_upload(&self, upload_id: &str, stored: Vec<pb::ChunkStored>) -> Result<()> {
        let req = pb::RenewUploadRequest {
            upload_id: upload_id.to_string(),
            stored,
        };
        self.trackers
            .call("put: renew upload", move |mut c| {
                let req = req.clone();
                async move { c.renew_upload(req).await }
            })
            .await
            .map(|_| ())
    }
}
