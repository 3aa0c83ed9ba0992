//! Uploads in flight after placement: renewed while they make progress (proved by
//! store receipts), expired or aborted otherwise, and held against every replica's
//! garbage collection until they end.

use super::put::millis;
use super::*;

/// Chunks one renewal may show receipts for (the client sends its latest).
pub const MAX_RENEW_CHUNKS: usize = 1024;

impl Tracker {
    /// The client proves its upload is making progress (store receipts it has not
    /// shown before) and the upload's expiry restarts, capped at its maximum
    /// lifetime. No new proof, no renewal: an idle upload still expires.
    pub async fn renew_upload(
        self: &Arc<Self>,
        req: pb::RenewUploadRequest,
    ) -> Result<pb::RenewUploadResponse> {
        if req.stored.len() > MAX_RENEW_CHUNKS {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_RENEW_CHUNKS} chunks per renewal, got {}",
                req.stored.len()
            )));
        }
        let cfg = &self.cfg;
        let (left, chunks) = {
            let mut st = self.state();
            let up = st.uploads.get_mut(&req.upload_id).ok_or_else(|| {
                Error::NotFound(format!("unknown or expired upload {:?}", req.upload_id))
            })?;
            let mut new = 0;
            for s in &req.stored {
                let h = *up.chunks.get(s.index as usize).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "chunk index {} out of range (upload has {} placed chunks)",
                        s.index,
                        up.chunks.len()
                    ))
                })?;
                let len = chunk_len(up.size, up.chunk_size, s.index as u64);
                let peers = crate::proof::receipted_peers(
                    &self.tickets,
                    &req.upload_id,
                    &h,
                    len,
                    &s.receipts,
                )?;
                for (peer, _) in peers {
                    new += usize::from(up.proven.insert((s.index, peer.to_string())));
                }
            }
            if new == 0 {
                return Err(Error::FailedPrecondition(
                    "no chunk stored since the last renewal (receipts it has not shown before \
                     are the proof): an upload is renewed only while it makes progress"
                        .into(),
                ));
            }
            let now = Instant::now();
            up.expires_at = (now + cfg.upload.expiry).min(up.begun + cfg.upload.max_lifetime);
            (
                up.expires_at.saturating_duration_since(now),
                up.chunks.clone(),
            )
        };
        // Other replicas' GC honours the shared row until its (new) expiry.
        self.hold_upload(&req.upload_id, &chunks, false, left)
            .await?;
        Ok(pb::RenewUploadResponse {
            expires_in_ms: millis(left),
        })
    }

    pub fn expire_uploads(&self) -> usize {
        self.state().uploads.expire(Instant::now())
    }

    /// The client gave up: the upload's chunks are no longer held (GC takes them after
    /// its grace unless a file references them).
    pub fn abort_upload(&self, upload_id: &str) {
        if self.state().uploads.end(upload_id).is_some() {
            self.release_upload(upload_id);
        }
    }

    /// With a shared store, record the chunks `upload_id` may commit, for every
    /// replica's garbage collection (until the upload would expire). Nothing to do on
    /// redb: this tracker's own uploads are all there is.
    pub(super) async fn hold_upload(
        self: &Arc<Self>,
        upload_id: &str,
        chunks: &[Hash],
        append: bool,
        ttl: std::time::Duration,
    ) -> Result<()> {
        if self.store.postgres().is_none() {
            return Ok(());
        }
        let (t, id, chunks) = (self.clone(), upload_id.to_string(), chunks.to_vec());
        tokio::task::spawn_blocking(move || match t.store.postgres() {
            Some(pg) => pg.hold_upload(&id, &chunks, append, ttl),
            None => Ok(()),
        })
        .await
        .map_err(|e| Error::Unavailable(format!("recording the upload failed: {e}")))?
        .map_err(|e| Error::Unavailable(format!("recording the upload: {e}")))
    }

    pub(super) fn release_upload(&self, upload_id: &str) {
        if let Some(pg) = self.store.postgres() {
            pg.release_upload(upload_id);
        }
    }

    /// Chunks uploads in flight anywhere may still commit: this replica's, and with a
    /// shared store every replica's (`None` if the store cannot be read — then nothing
    /// may be collected). Blocking: for the manager's thread.
    pub fn held_by_uploads(&self) -> Option<HashSet<Hash>> {
        let mut held = self.state().uploads.held_chunks();
        if let Some(pg) = self.store.postgres() {
            match pg.held_chunks() {
                Ok(shared) => held.extend(shared),
                Err(e) => {
                    warn!(error = %e, "uploads in flight unreadable; no garbage collected nor copy trimmed this round");
                    return None;
                }
            }
        }
        Some(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use shoal_common::ticket::TicketKeys;
    use std::time::Duration;

    const E: Duration = Duration::from_secs(600);

    fn stored(keys: &TicketKeys, up: &str, peer: &str, h: &Hash) -> pb::ChunkStored {
        pb::ChunkStored {
            index: 0,
            peer_ids: vec![],
            receipts: vec![keys.receipt(peer, up, &h.to_hex(), 1, None)],
        }
    }

    /// Renewals need proof each time (a receipt not shown before), restart the expiry,
    /// never pass the maximum lifetime, and an upload that stops proving expires.
    #[tokio::test(start_paused = true)]
    async fn an_upload_lives_while_it_proves_progress_and_expires_when_it_stops() {
        let mut cfg = TrackerConfig::for_data_dir(std::path::PathBuf::new());
        cfg.upload.expiry = E;
        cfg.upload.max_lifetime = E * 3;
        let t = crate::writer::tests::tracker_with(cfg, &MemoryStore::default());
        let begun = t
            .begin_upload(
                [7; 32],
                pb::BeginUploadRequest {
                    name: "slow".into(),
                    size: 1,
                    replicas: 3,
                    overwrite: false,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(begun.expires_in_ms, E.as_millis() as u64);
        let id = begun.upload_id.clone();
        let h = Hash::of(b"x");
        let placed = t
            .place_chunks(pb::PlaceChunksRequest {
                upload_id: id.clone(),
                file_id: Hash::of(b"file").to_hex(),
                chunks: vec![pb::ChunkDigest {
                    index: 0,
                    hash: h.to_hex(),
                    size: 1,
                }],
            })
            .await
            .unwrap();
        let ticket = placed.placements[0].ticket.clone().unwrap();
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(
            ticket.expires_unix_ms >= wall_ms + (E * 3 - E / 10).as_millis() as u64,
            "tickets last the upload's maximum lifetime, not one expiry"
        );
        let keys = TicketKeys::new(None, None, None);
        let forged = TicketKeys::from_token("not-the-cluster-key-0123456789");
        let renew = |stored: Vec<pb::ChunkStored>| {
            t.renew_upload(pb::RenewUploadRequest {
                upload_id: id.clone(),
                stored,
            })
        };
        let alive = |t: &Tracker| {
            t.expire_uploads();
            t.state().uploads.get(&id).is_some()
        };

        tokio::time::advance(E * 9 / 10).await;
        let e = renew(vec![stored(&forged, &id, "p0", &h)])
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::FailedPrecondition(_)),
            "a forged receipt proves nothing: {e}"
        );
        let r = renew(vec![stored(&keys, &id, "p0", &h)]).await.unwrap();
        assert_eq!(r.expires_in_ms, E.as_millis() as u64, "the expiry restarts");
        tokio::time::advance(E * 9 / 10).await;
        assert!(alive(&t), "renewed: alive past its first expiry");
        assert!(
            t.held_by_uploads().unwrap().contains(&h),
            "its chunk is held from GC"
        );
        let e = renew(vec![stored(&keys, &id, "p0", &h)]).await.unwrap_err();
        assert!(
            matches!(e, Error::FailedPrecondition(_)),
            "the same receipt twice: {e}"
        );
        let r = renew(vec![stored(&keys, &id, "p1", &h)]).await.unwrap();
        assert_eq!(r.expires_in_ms, E.as_millis() as u64);
        tokio::time::advance(E * 9 / 10).await;
        // At 2.7 E: the last renewal is cut at the maximum lifetime (3 E).
        let r = renew(vec![stored(&keys, &id, "p2", &h)]).await.unwrap();
        assert!(
            r.expires_in_ms <= (E * 3 / 10).as_millis() as u64 + 1,
            "{r:?}"
        );
        tokio::time::advance(E * 3 / 10 + Duration::from_millis(1)).await;
        assert!(!alive(&t), "past its maximum lifetime the upload is gone");
        assert!(!t.held_by_uploads().unwrap().contains(&h));
        let e = renew(vec![stored(&keys, &id, "p0", &h)]).await.unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_that_proves_nothing_expires_on_time() {
        let mut cfg = TrackerConfig::for_data_dir(std::path::PathBuf::new());
        cfg.upload.expiry = E;
        let t = crate::writer::tests::tracker_with(cfg, &MemoryStore::default());
        let id = t
            .begin_upload(
                [7; 32],
                pb::BeginUploadRequest {
                    name: "idle".into(),
                    size: 1,
                    replicas: 2,
                    overwrite: false,
                    ..Default::default()
                },
            )
            .unwrap()
            .upload_id;
        tokio::time::advance(E - Duration::from_millis(1)).await;
        assert_eq!(t.expire_uploads(), 0);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(t.expire_uploads(), 1, "{id} expired");
    }
}
