//! The put path up to the commit: begin an upload, fragment it, place its chunks
//! (zones first, then free space and load) and issue the tickets peers check.

use super::*;

impl Tracker {
    // ---- uploads --------------------------------------------------------------

    /// Begin an upload for `owner` (who is calling: see [`crate::badreport::caller`]),
    /// within the caps on uploads in flight.
    pub fn begin_upload(
        &self,
        owner: crate::uploads::Owner,
        req: pb::BeginUploadRequest,
    ) -> Result<pb::BeginUploadResponse> {
        shoal_common::names::validate(&req.name)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let cfg = &self.cfg;
        if req.size > cfg.chunk.max_file_bytes {
            return Err(Error::InvalidArgument(format!(
                "file of {} bytes exceeds the limit of {} bytes",
                req.size, cfg.chunk.max_file_bytes
            )));
        }
        let replicas = if req.replicas == 0 {
            cfg.replication.factor
        } else {
            req.replicas
        };
        if replicas > cfg.replication.max_factor {
            return Err(Error::InvalidArgument(format!(
                "replica count {replicas} exceeds the limit of {}",
                cfg.replication.max_factor
            )));
        }
        // A stream is fragmented by the most it may hold: its exact size comes last.
        let frag = fragment(req.size, cfg.chunk.min_bytes, cfg.chunk.max_bytes);
        // The fragmentation decision, with its reasons, as a span of its own.
        info_span!(
            "fragment",
            file.name = %req.name,
            file.size = req.size,
            file.streaming = req.streaming,
            fragment.chunk_size = frag.chunk_size,
            fragment.chunks = frag.chunks,
            fragment.policy = %frag.reason,
        )
        .in_scope(|| {
            info!(
                chunk_size = frag.chunk_size,
                chunks = frag.chunks,
                "fragmentation decided"
            )
        });
        let upload_id = hex::encode(rand::random::<[u8; 16]>());
        // A name clash is only known at PlaceChunks: the same content under the same name is fine.
        let now = Instant::now();
        let caps = crate::uploads::Caps {
            overall: cfg.upload.max_in_flight,
            per_owner: cfg.upload.max_per_token,
        };
        self.state().uploads.begin(
            upload_id.clone(),
            Upload {
                name: req.name,
                size: if req.streaming { 0 } else { req.size },
                streaming: req.streaming.then_some(req.size),
                charged: Default::default(),
                chunk_size: frag.chunk_size,
                replicas,
                overwrite: req.overwrite,
                expires_at: now + cfg.upload.expiry,
                file_id: None,
                chunks: Vec::new(),
                avoid: Default::default(),
                owner,
                begun: now,
                proven: Default::default(),
            },
            caps,
        )?;
        Ok(pb::BeginUploadResponse {
            upload_id,
            chunk_size: frag.chunk_size,
            replicas,
            fragment_reason: frag.reason,
            expires_in_ms: millis(cfg.upload.expiry),
        })
    }

    pub async fn place_chunks(
        self: &Arc<Self>,
        req: pb::PlaceChunksRequest,
    ) -> Result<pb::PlaceChunksResponse> {
        let streaming = self
            .state()
            .uploads
            .get(&req.upload_id)
            .is_some_and(|u| u.streaming.is_some());
        if streaming {
            return self.place_window(req).await;
        }
        let file_id = bad_hash(&req.file_id)?;
        let mut digests = req.chunks;
        digests.sort_by_key(|c| c.index);
        let hashes: Vec<Hash> = digests
            .iter()
            .map(|c| bad_hash(&c.hash))
            .collect::<Result<_>>()?;
        let span = info_span!("placement", file.id = %file_id, chunks = digests.len());
        let upload_id = req.upload_id;
        let known = {
            let st = self.state();
            check_placement(&st, &upload_id, file_id, &digests)?;
            st.catalogue.file(&file_id).is_some()
        };
        if known {
            return self
                .place_known_content(upload_id, file_id, digests, hashes, span)
                .await;
        }
        // New content: placement changes no catalogue, so it needs no writer. Facts are
        // read under the lock, decided without it, and recorded under it again.
        let (up, candidates, holders) = {
            let st = self.state();
            let now = Instant::now();
            let up = check_placement(&st, &upload_id, file_id, &digests)?;
            let holders = holders(&st, &hashes, &self.cfg, now);
            (up, self.cached_candidates(&st, now), holders)
        };
        let candidates = (*candidates).clone();
        let decided = span.in_scope(|| place_file(&up, 0, &hashes, candidates, &holders))?;
        let placements = self.placements(&upload_id, &up, 0, &hashes, &decided);
        // Other replicas' garbage collection must see these chunks held before any
        // peer stores one (the client learns the targets only from this answer).
        self.hold_upload(&upload_id, &hashes, false, self.cfg.upload.expiry)
            .await?;
        let mut st = self.state();
        for (h, d) in hashes.iter().zip(decided) {
            st.placement_reasons.insert(*h, d.reason);
        }
        let up = st.uploads.get_mut(&upload_id).ok_or_else(|| {
            Error::NotFound(format!("upload {upload_id:?} expired during placement"))
        })?;
        up.file_id = Some(file_id);
        up.chunks = hashes;
        Ok(pb::PlaceChunksResponse {
            deduplicated: false,
            placements,
            file: None,
        })
    }

    /// The targets and tickets of chunks `first..` of an upload, as decided.
    pub(super) fn placements(
        &self,
        upload_id: &str,
        up: &UploadShape,
        first: usize,
        hashes: &[Hash],
        decided: &[Placed],
    ) -> Vec<pb::ChunkPlacement> {
        let peers: std::collections::HashMap<&str, pb::PeerRef> = {
            let st = self.state();
            decided
                .iter()
                .flat_map(|d| d.decision.chosen.iter())
                .filter_map(|id| st.peers.get(id).map(|p| (id.as_str(), p.peer_ref())))
                .collect()
        };
        let mut placements = Vec::with_capacity(decided.len());
        for (i, (h, d)) in hashes.iter().zip(decided).enumerate() {
            let index = first + i;
            self.metrics.placement(d.outcome);
            let targets: Vec<pb::PeerRef> = d
                .decision
                .chosen
                .iter()
                .filter_map(|id| peers.get(id.as_str()).cloned())
                .collect();
            let len = chunk_len(up.size, up.chunk_size, index as u64);
            let ticket = (!targets.is_empty()).then(|| self.ticket(upload_id, h, len, &targets));
            placements.push(pb::ChunkPlacement {
                index: index as u32,
                hash: h.to_hex(),
                targets,
                already_stored: d.outcome == "dedup",
                reason: d.reason.clone(),
                ticket,
            });
        }
        placements
    }

    /// The content is already stored: the name is all that is new (a catalogue write).
    async fn place_known_content(
        &self,
        upload_id: String,
        file_id: Hash,
        digests: Vec<pb::ChunkDigest>,
        hashes: Vec<Hash>,
        span: tracing::Span,
    ) -> Result<pb::PlaceChunksResponse> {
        let created_ms = now_ms();
        let named_id = upload_id.clone();
        self.write(move |st, cfg, now| {
            let _e = span.enter();
            let up = check_placement(st, &upload_id, file_id, &digests)?;
            let f = st.catalogue.file(&file_id).ok_or_else(|| {
                Error::Unavailable("the content was deleted during the upload; retry".into())
            })?;
            // A name binds only to a record of this very layout (never to a junk record
            // that merely claims the id).
            crate::proof::same_layout(f, up.size, up.chunk_size, &hashes)?;
            let mut changes = Vec::new();
            st.catalogue
                .plan_bind(&up.name, file_id, up.overwrite, created_ms, &mut changes)?;
            let summary = st.file_summary(&up.name, f, created_ms, cfg, now);
            info!(dedup = true, "content already stored; name added");
            let id = upload_id.clone();
            Ok(Planned::new(
                pb::PlaceChunksResponse {
                    deduplicated: true,
                    placements: vec![],
                    file: Some(summary),
                },
                changes,
            )
            .then(move |st| {
                st.uploads.end(&id);
            }))
        })
        .await
        .inspect(|_| self.release_upload(&named_id))
    }

    /// New pipeline targets for one chunk of an upload whose pipeline lost a hop: the
    /// same scoring as [`Tracker::place_chunks`], minus the peers that failed in this
    /// upload (remembered for the rest of it) and the ones that already hold the chunk.
    pub fn replace_targets(
        &self,
        req: pb::ReplaceTargetsRequest,
    ) -> Result<pb::ReplaceTargetsResponse> {
        let cfg = &self.cfg;
        let now = Instant::now();
        if req.failed_peer_ids.len() > MAX_HINTED_PEERS
            || req.holder_peer_ids.len() > MAX_HINTED_PEERS
        {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_HINTED_PEERS} failed and {MAX_HINTED_PEERS} holder peer ids"
            )));
        }
        let mut guard = self.state();
        let st = &mut *guard;
        let up = st.uploads.get_mut(&req.upload_id).ok_or_else(|| {
            Error::NotFound(format!("unknown or expired upload {:?}", req.upload_id))
        })?;
        let h = *up.chunks.get(req.index as usize).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "chunk index {} out of range (upload has {} placed chunks)",
                req.index,
                up.chunks.len()
            ))
        })?;
        if req.want == 0 || req.want > up.replicas {
            return Err(Error::InvalidArgument(format!(
                "want must be 1..={} copies, got {}",
                up.replicas, req.want
            )));
        }
        // Only ids of peers the tracker knows become hints: the set stays bounded.
        for id in &req.failed_peer_ids {
            if up.avoid.len() < MAX_HINTED_PEERS && st.peers.contains_key(id) {
                up.avoid.insert(id.clone());
            }
        }
        let len = chunk_len(up.size, up.chunk_size, req.index as u64);
        let avoid = up.avoid.clone();
        let st = &*st;
        let mut holders: Vec<(String, String)> = Vec::new();
        for id in req
            .holder_peer_ids
            .iter()
            .chain(st.live_holders(&h, cfg, now).into_iter().map(|p| &p.id))
        {
            if let Some(p) = st.peers.get(id) {
                if !holders.iter().any(|(i, _)| i == id) {
                    holders.push((p.id.clone(), p.zone.clone()));
                }
            }
        }
        let mut cands = Self::candidates(st, cfg, now);
        crate::placement::avoid(&mut cands, &avoid);
        let d = Planner::new(cands).place(&h, len, req.want as usize, &holders);
        let reason = d.reason();
        info_span!(
            "replace",
            chunk.index = req.index,
            chunk.hash = %h,
            placement.avoid = ?avoid,
            placement.chosen = ?d.chosen,
            placement.zones_covered = d.zones_covered,
            placement.reason = %reason,
        )
        .in_scope(|| info!("replacement targets chosen"));
        // Pipeline recoveries show as placements with outcome "replace" (or "replace_none").
        self.metrics.placement(if d.chosen.is_empty() {
            "replace_none"
        } else {
            "replace"
        });
        // Not UNAVAILABLE: clients would take that for this replica being down and ask
        // another, which does not know the upload.
        if d.chosen.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "no live peer outside the {} that failed in this upload can take chunk {} ({len} bytes)",
                avoid.len(),
                req.index
            )));
        }
        let targets: Vec<pb::PeerRef> = d
            .chosen
            .iter()
            .filter_map(|id| st.peers.get(id))
            .map(|p| p.peer_ref())
            .collect();
        let ticket = self.ticket(&req.upload_id, &h, len, &targets);
        Ok(pb::ReplaceTargetsResponse {
            targets,
            reason,
            ticket: Some(ticket),
        })
    }

    /// The placement ticket for one pipeline of an upload, valid for the longest an
    /// upload can live (`SHOAL_UPLOAD__MAX_LIFETIME`): renewals keep the upload, and
    /// its tickets must not run out under it. A ticket used after its upload ended
    /// only stores an orphan, which garbage collection takes after its grace.
    fn ticket(
        &self,
        upload_id: &str,
        h: &Hash,
        len: u64,
        targets: &[pb::PeerRef],
    ) -> pb::PlacementTicket {
        self.tickets.issue(
            upload_id,
            &h.to_hex(),
            len,
            targets.iter().map(|p| p.id.clone()).collect(),
            self.cfg.upload.max_lifetime,
        )
    }
}

pub(super) fn millis(d: std::time::Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// What placement needs of an upload, checked against the chunk list a client sent.
pub(super) struct UploadShape {
    pub(super) name: String,
    pub(super) overwrite: bool,
    pub(super) replicas: u32,
    pub(super) chunk_size: u64,
    pub(super) size: u64,
}

/// The upload exists, the chunk list matches its size and chunk size, and the name is
/// free (or the same content, or overwrite was asked for).
fn check_placement(
    st: &State,
    upload_id: &str,
    file_id: Hash,
    digests: &[pb::ChunkDigest],
) -> Result<UploadShape> {
    let up = st
        .uploads
        .get(upload_id)
        .ok_or_else(|| Error::NotFound(format!("unknown or expired upload {upload_id:?}")))?;
    let expected = chunk_count(up.size, up.chunk_size);
    if digests.len() as u64 != expected {
        return Err(Error::InvalidArgument(format!(
            "upload of {} bytes in chunks of {} has {expected} chunks, got {}",
            up.size,
            up.chunk_size,
            digests.len()
        )));
    }
    for (i, d) in digests.iter().enumerate() {
        if d.index as usize != i {
            return Err(Error::InvalidArgument(format!(
                "chunk indices must be 0..{expected} once each; got index {} twice or out of range",
                d.index
            )));
        }
        let want = chunk_len(up.size, up.chunk_size, i as u64);
        if d.size != want {
            return Err(Error::InvalidArgument(format!(
                "chunk {i} must be {want} bytes, got {}",
                d.size
            )));
        }
    }
    if up.size == 0 && file_id != Hash::from(blake3::hash(b"")) {
        return Err(Error::InvalidArgument(
            "an empty file has the BLAKE3 id of empty content".into(),
        ));
    }
    if let Some(existing) = st.catalogue.name(&up.name) {
        if existing.id != file_id && !up.overwrite {
            return Err(Error::AlreadyExists(format!(
                "a different file named {:?} exists (id {}); use --overwrite to replace it",
                up.name, existing.id
            )));
        }
    }
    Ok(UploadShape {
        name: up.name.clone(),
        overwrite: up.overwrite,
        replicas: up.replicas,
        chunk_size: up.chunk_size,
        size: up.size,
    })
}

/// For each chunk, the alive, not draining peers (id, zone) that hold it: what
/// placement counts as copies already made.
pub(super) fn holders(
    st: &State,
    hashes: &[Hash],
    cfg: &TrackerConfig,
    now: Instant,
) -> Vec<Vec<(String, String)>> {
    hashes
        .iter()
        .map(|h| {
            st.live_holders(h, cfg, now)
                .iter()
                .filter(|p| !p.draining && st.liveness(p, cfg, now) == Liveness::Alive)
                .map(|p| (p.id.clone(), p.zone.clone()))
                .collect()
        })
        .collect()
}

/// One chunk's placement: the decision, its reason, and its outcome for the metrics.
pub(super) struct Placed {
    pub(super) decision: Decision,
    pub(super) reason: String,
    pub(super) outcome: &'static str,
}

/// Place every chunk of a new file: for each, the peers that should take a copy, by the
/// one scoring function (`placement`), given who already holds it. A span per chunk
/// carries the decision and its reasons.
pub(super) fn place_file(
    up: &UploadShape,
    first: usize,
    hashes: &[Hash],
    candidates: Vec<Candidate>,
    holders: &[Vec<(String, String)>],
) -> Result<Vec<Placed>> {
    let mut planner = Planner::new(candidates);
    let mut out = Vec::with_capacity(hashes.len());
    for (i, (h, holders)) in hashes.iter().zip(holders).enumerate() {
        let i = first + i;
        let len = chunk_len(up.size, up.chunk_size, i as u64);
        let want = (up.replicas as usize).saturating_sub(holders.len());
        let decision = if want == 0 {
            Decision::default()
        } else {
            planner.place(h, len, want, holders)
        };
        if want > 0 && decision.chosen.is_empty() {
            return Err(Error::Unavailable(format!(
                "no live peer can take chunk {i} ({len} bytes)"
            )));
        }
        let reason = if want == 0 {
            format!("already stored on {} peers", holders.len())
        } else {
            decision.reason()
        };
        info_span!(
            "place",
            chunk.index = i,
            chunk.hash = %h,
            placement.chosen = ?decision.chosen,
            placement.zones_covered = decision.zones_covered,
            placement.zones_available = decision.zones_available,
            placement.candidates = decision.candidates,
            placement.eligible = decision.eligible,
            placement.scores = ?decision.scores,
            placement.reason = %reason,
        )
        .in_scope(|| tracing::debug!("placed"));
        let outcome = if want == 0 {
            "dedup"
        } else if decision.chosen.len() < want {
            "short"
        } else {
            "full"
        };
        out.push(Placed {
            decision,
            reason,
            outcome,
        });
    }
    Ok(out)
}
