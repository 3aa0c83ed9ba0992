//! Commit and delete: a placed upload becomes a catalogue record (persisted, then
//! applied), held chunks are released, and unreferenced content is deleted from peers.

use super::*;

impl Tracker {
    pub async fn commit_upload(
        self: &Arc<Self>,
        req: pb::CommitUploadRequest,
    ) -> Result<pb::CommitUploadResponse> {
        let created_ms = now_ms();
        let keys = self.tickets.clone();
        let committed_id = req.upload_id.clone();
        let summary = self
            .write(move |st, cfg, now| {
                let up = st.uploads.get(&req.upload_id).ok_or_else(|| {
                    Error::NotFound(format!("unknown or expired upload {:?}", req.upload_id))
                })?;
                let file_id = match up.streaming {
                    // Named now: the stream's content was known only at its end.
                    Some(_) => streamed_id(up.size, &req.file_id)?,
                    None => up.file_id.ok_or_else(|| {
                        Error::FailedPrecondition(
                            "upload has no placement yet: call PlaceChunks first".into(),
                        )
                    })?,
                };
                if let Some(rec) = st.catalogue.file(&file_id) {
                    crate::proof::same_layout(rec, up.size, up.chunk_size, &up.chunks)?;
                }
                // The copies the client stored, counted with the ones already known: only
                // copies a peer signed for (`peer_ids` are claims, never counted).
                let mut seen = HashSet::new();
                let mut stored: Vec<(String, Hash, Option<WriteMark>)> = Vec::new();
                for s in &req.stored {
                    let h = *up.chunks.get(s.index as usize).ok_or_else(|| {
                        Error::InvalidArgument(format!("chunk index {} out of range", s.index))
                    })?;
                    if !seen.insert(s.index) {
                        return Err(Error::InvalidArgument(format!(
                            "chunk index {} reported twice",
                            s.index
                        )));
                    }
                    let len = chunk_len(up.size, up.chunk_size, s.index as u64);
                    for (peer, mark) in
                        crate::proof::receipted_peers(&keys, &req.upload_id, &h, len, &s.receipts)?
                    {
                        // Counted even while a deletion of this chunk is on its way to
                        // the peer: the peer spares a copy acknowledged since.
                        if st.peers.contains_key(peer) {
                            stored.push((peer.to_string(), h, mark));
                        }
                    }
                }
                let live = st.live_peer_count(cfg, now).max(1);
                let required = (up.replicas as usize).min(2).min(live);
                for (i, h) in up.chunks.iter().enumerate() {
                    let mut holders: HashSet<&str> = st
                        .live_holders(h, cfg, now)
                        .iter()
                        .map(|p| p.id.as_str())
                        .collect();
                    for (peer, _, _) in stored.iter().filter(|(_, c, _)| c == h) {
                        if st
                            .peers
                            .get(peer)
                            .is_some_and(|p| st.liveness(p, cfg, now) != Liveness::Dead)
                        {
                            holders.insert(peer);
                        }
                    }
                    if holders.len() < required {
                        return Err(Error::FailedPrecondition(format!(
                            "chunk {i} is durable on {} peers, {required} required",
                            holders.len()
                        )));
                    }
                }
                let file = FileRecord {
                    id: file_id,
                    size: up.size,
                    chunk_size: up.chunk_size,
                    chunks: up.chunks.clone(),
                    replicas: up.replicas,
                    created_ms,
                };
                // The name is decided here, on the catalogue as the writer has it: another
                // upload (through this replica or another) may have taken it since PlaceChunks.
                let mut changes = Vec::new();
                st.catalogue.plan_insert(file.clone(), &mut changes);
                st.catalogue.plan_bind(
                    &up.name,
                    file_id,
                    up.overwrite,
                    created_ms,
                    &mut changes,
                )?;
                let created = st
                    .catalogue
                    .name(&up.name)
                    .filter(|n| n.id == file_id)
                    .map_or(created_ms, |n| n.created_ms);
                let upload_id = req.upload_id.clone();
                let summary = st.file_summary(&up.name, &file, created, cfg, now);
                Ok(Planned::new(summary, changes).then(move |st| {
                    let now = Instant::now();
                    for (peer, h, mark) in stored {
                        st.add_stored(&peer, h, mark, now);
                    }
                    st.uploads.end(&upload_id);
                }))
            })
            .await?;
        self.release_upload(&committed_id);
        // Counted with the copies the commit recorded.
        let summary = {
            let st = self.state();
            let now = Instant::now();
            st.catalogue
                .name(&summary.name)
                .and_then(|n| st.summary(&summary.name, n, &self.cfg, now))
                .unwrap_or(summary)
        };
        Ok(pb::CommitUploadResponse {
            file: Some(summary),
        })
    }

    pub async fn delete(self: &Arc<Self>, name_or_id: String) -> Result<pb::DeleteFileResponse> {
        let (names, removed) = self
            .write(move |st, _, _| {
                let (names, removed, changes) = st.catalogue.plan_delete(&name_or_id)?;
                Ok(Planned::new((names, removed), changes))
            })
            .await?;
        info!(names = ?names, content_removed = removed, "deleted");
        Ok(pb::DeleteFileResponse {
            names_removed: names,
            content_removed: removed,
        })
    }

    /// Tell peers to delete chunks nothing references. Best effort: a peer that misses
    /// it keeps the chunk until garbage collection finds it unreferenced. Each carries
    /// the peer's write mark from the decision: the peer spares what was stored since.
    pub fn send_deletions(self: &Arc<Self>, deletions: Vec<Deletion>) {
        if deletions.is_empty() {
            return;
        }
        let timeout = self.cfg.repair.delete_timeout;
        self.state().note_deletions(&deletions, Instant::now());
        for d in deletions {
            let channel = self.channels.get(&d.addr);
            let t = self.clone();
            tokio::spawn(async move {
                let req = pb::DeleteChunksRequest {
                    hashes: d.chunks.iter().map(Hash::to_hex).collect(),
                    spare_written_after: Some(pb::WriteMark {
                        boot: d.after.0,
                        seq: d.after.1,
                    }),
                };
                let result = tokio::time::timeout(timeout, async {
                    let mut c = pb::peer_client::PeerClient::new(channel?);
                    c.delete_chunks(req).await
                })
                .await
                .unwrap_or_else(|_| {
                    Err(tonic::Status::deadline_exceeded(format!(
                        "no answer within {timeout:?}"
                    )))
                });
                let answer = match result {
                    Ok(r) => {
                        let r = r.into_inner();
                        let spared: Vec<Hash> =
                            r.spared.iter().filter_map(|s| s.parse().ok()).collect();
                        if !spared.is_empty() {
                            info!(peer = %d.peer_id, spared = spared.len(), "peer kept chunks stored there since their deletion was decided");
                        }
                        let mark = crate::service::write_mark(r.mark);
                        Some(crate::state::Answer { spared, mark })
                    }
                    Err(e) => {
                        warn!(peer = %d.peer_id, error = %e.message(), "chunk deletion failed; GC will retry");
                        None
                    }
                };
                t.state()
                    .deletion_answered(&d, answer.as_ref(), Instant::now());
            });
        }
    }
}

/// A streaming upload's content id, as its commit names it.
fn streamed_id(size: u64, file_id: &str) -> Result<Hash> {
    if file_id.is_empty() {
        return Err(Error::InvalidArgument(
            "a streaming upload names its file_id (BLAKE3 of the content) at commit".into(),
        ));
    }
    let id = bad_hash(file_id)?;
    if size == 0 && id != Hash::from(blake3::hash(b"")) {
        return Err(Error::InvalidArgument(
            "an empty file has the BLAKE3 id of empty content".into(),
        ));
    }
    Ok(id)
}
