//! Upload: fragment (tracker), hash once, place (tracker), stream each chunk once to
//! the head of its pipeline, commit.
//!
//! A pipeline that loses a hop (a peer dead, refusing, or stalled past the progress
//! deadline) is completed on replacement targets from the tracker (HDFS's
//! replace-datanode-on-failure) until the chunk is durable on min(R, 2) peers; copies
//! beyond that are left to repair. Peers that failed are avoided for the rest of the
//! put, and named to the tracker with every replacement request.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::{stream, StreamExt};
use shoal_common::hash::{ChainingValue, ChunkTree, Hash};
use shoal_proto::v1 as pb;
use tracing::{debug, info_span, warn, Instrument};

use crate::body::Body;
use crate::failover::{answer_deadline, Avoid, Clock};
use crate::renewal::Renewal;
use crate::{Client, ClientError, Progress, Result};

#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    pub name: String,
    /// 0 = the cluster default.
    pub replicas: u32,
    pub overwrite: bool,
}

#[derive(Debug, Clone)]
pub struct PutResult {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub chunk_size: u64,
    pub chunks: u32,
    /// True when the content was already stored and only the name was added.
    pub deduplicated: bool,
    pub file: Option<pb::FileSummary>,
}

/// Hash a file: every chunk's BLAKE3 and the whole file's (its id). Chunks are hashed
/// on every core at once, each read once with positional reads; the id comes from the
/// chunks' chaining values in the file's BLAKE3 tree ([`ChunkTree`]), so no byte is
/// read twice. Returns the id, the chunks and the bytes read.
pub fn hash_file(
    path: &Path,
    chunk_size: u64,
    progress: &dyn Progress,
) -> Result<(String, Vec<pb::ChunkDigest>, u64)> {
    let f = File::open(path).map_err(|e| ClientError::io(path, e))?;
    let size = f.metadata().map_err(|e| ClientError::io(path, e))?.len();
    let count = size.div_ceil(chunk_size.max(1)) as usize;
    let tree = ChunkTree::new(size, chunk_size);
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, count.max(1));
    let hash_chunks = || -> std::io::Result<Vec<(usize, Hash, Option<ChainingValue>)>> {
        let mut out = Vec::new();
        // No bigger than the file: a 4 KiB put zeroed a whole MiB (a sixth of a small
        // put's client CPU).
        let mut buf = vec![0u8; size.clamp(1, 1 << 20) as usize];
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count {
                return Ok(out);
            }
            let start = i as u64 * chunk_size;
            let len = chunk_size.min(size - start);
            let mut own = blake3::Hasher::new();
            let mut sub = tree.map(|t| t.hasher(i as u64));
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(buf.len() as u64) as usize;
                // A file that shrinks under us fails here; one that grows is caught below.
                f.read_exact_at(&mut buf[..n], start + done)?;
                own.update(&buf[..n]);
                if let Some(h) = &mut sub {
                    h.update(&buf[..n]);
                }
                done += n as u64;
                progress.advance(n as u64);
            }
            out.push((
                i,
                own.finalize().into(),
                sub.as_ref().map(ChunkTree::chaining_value),
            ));
        }
    };
    // One worker hashes here: a thread per small file costs more than its hashing.
    let mut hashed: Vec<(usize, Hash, Option<ChainingValue>)> = std::thread::scope(|s| {
        if workers == 1 {
            return hash_chunks();
        }
        let handles: Vec<_> = (0..workers).map(|_| s.spawn(hash_chunks)).collect();
        let mut all = Vec::with_capacity(count);
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| std::io::Error::other("hashing thread panicked"))??,
            );
        }
        Ok::<_, std::io::Error>(all)
    })
    .map_err(|e| ClientError::io(path, e))?;
    hashed.sort_unstable_by_key(|(i, ..)| *i);
    let id = match tree {
        Some(t) => {
            let cvs: Vec<ChainingValue> = hashed.iter().filter_map(|(_, _, cv)| *cv).collect();
            t.root(&cvs)
                .ok_or_else(|| ClientError::Other("chunk tree does not match the file".into()))?
        }
        // One chunk (or none): the file's id is the chunk's hash.
        None if count <= 1 => hashed.first().map_or_else(|| Hash::of(b""), |(_, h, _)| *h),
        None => crate::verify::whole_file_hash(path)
            .map_err(|e| ClientError::io(path, e))?
            .into(),
    };
    let grown = f.metadata().map_err(|e| ClientError::io(path, e))?.len();
    let chunks = hashed
        .into_iter()
        .map(|(i, h, _)| pb::ChunkDigest {
            index: i as u32,
            hash: h.to_hex(),
            size: chunk_size.min(size - i as u64 * chunk_size),
        })
        .collect();
    Ok((id.to_hex(), chunks, grown))
}

impl Client {
    pub async fn put(
        &self,
        path: &Path,
        opts: PutOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<PutResult> {
        let meta = std::fs::metadata(path).map_err(|e| ClientError::io(path, e))?;
        if !meta.is_file() {
            return Err(ClientError::Other(format!(
                "{}: not a regular file",
                path.display()
            )));
        }
        let size = meta.len();
        let name = opts.name.clone();
        let span = info_span!("put", file.name = %name, file.size = size);
        async {
            let begin = self
                .trackers
                .call("put: begin upload", |mut c| {
                    let req = pb::BeginUploadRequest {
                        name: name.clone(),
                        size,
                        replicas: opts.replicas,
                        overwrite: opts.overwrite,
                        ..Default::default()
                    };
                    async move { c.begin_upload(req).await }
                })
                .await?;
            let result = self.put_inner(path, &name, size, &begin, &progress).await;
            if result.is_err() {
                self.abort_upload(&begin.upload_id).await;
            }
            result
        }
        .instrument(span)
        .await
    }

    /// Best effort: an upload not aborted expires.
    pub(crate) async fn abort_upload(&self, upload_id: &str) {
        let _ = self
            .trackers
            .call("abort upload", |mut c| {
                let upload_id = upload_id.to_string();
                async move { c.abort_upload(pb::AbortUploadRequest { upload_id }).await }
            })
            .await;
    }

    async fn put_inner(
        &self,
        path: &Path,
        name: &str,
        size: u64,
        begin: &pb::BeginUploadResponse,
        progress: &Arc<dyn Progress>,
    ) -> Result<PutResult> {
        let chunk_size = begin.chunk_size;
        progress.start(size * 2, "hashing");
        let (p, pr) = (path.to_path_buf(), progress.clone());
        let (file_id, digests, hashed) =
            tokio::task::spawn_blocking(move || hash_file(&p, chunk_size, pr.as_ref()))
                .await
                .map_err(|e| ClientError::Other(format!("hashing task: {e}")))??;
        if hashed != size {
            return Err(ClientError::Other(format!(
                "{}: file changed while reading ({size} → {hashed} bytes)",
                path.display()
            )));
        }
        let chunks = digests.len() as u32;
        let placed = self
            .trackers
            .call("put: place chunks", |mut c| {
                let req = pb::PlaceChunksRequest {
                    upload_id: begin.upload_id.clone(),
                    file_id: file_id.clone(),
                    chunks: digests.clone(),
                };
                async move { c.place_chunks(req).await }
            })
            .await?;
        let result = |file| PutResult {
            id: file_id.clone(),
            name: name.to_string(),
            size,
            chunk_size,
            chunks,
            deduplicated: placed.deduplicated,
            file,
        };
        if placed.deduplicated {
            progress.finish();
            return Ok(result(placed.file.clone()));
        }
        let skipped: u64 = placed
            .placements
            .iter()
            .filter(|p| p.already_stored)
            .map(|p| digests[p.index as usize].size)
            .sum();
        progress.advance(skipped);
        // Peers that fail or stall are avoided for the rest of this put.
        let avoid = Avoid::default();
        let up = Upload {
            id: &begin.upload_id,
            avoid: &avoid,
        };
        let up = &up;
        // Futures are built eagerly: no closure types end up inside the spawned future.
        let mut sends = Vec::new();
        for p in &placed.placements {
            if p.already_stored {
                continue;
            }
            let len = digests[p.index as usize].size;
            sends.push(async move {
                let body = Body::File {
                    path,
                    offset: p.index as u64 * chunk_size,
                };
                let (peer_ids, receipts) = self.send_chunk(up, p, &body, len).await?;
                progress.advance(len);
                Ok::<_, ClientError>(pb::ChunkStored {
                    index: p.index,
                    peer_ids,
                    receipts,
                })
            });
        }
        let stored = self
            .store_all(&begin.upload_id, begin.expires_in_ms, sends)
            .await?;
        let committed = self
            .trackers
            .call("put: commit", |mut c| {
                let req = pb::CommitUploadRequest {
                    upload_id: begin.upload_id.clone(),
                    stored: stored.clone(),
                    ..Default::default()
                };
                async move { c.commit_upload(req).await }
            })
            .await?;
        progress.finish();
        Ok(result(committed.file))
    }

    /// Run the chunk sends, `put_parallelism` at once, and keep the upload alive while
    /// they make progress: every third of its expiry, the receipts gathered since the
    /// last renewal go to the tracker as proof (a long put outlives one expiry; an idle
    /// one does not). A failed renewal is only logged: the commit says what counts.
    async fn store_all(
        &self,
        upload_id: &str,
        expires_in_ms: u64,
        sends: Vec<impl std::future::Future<Output = Result<pb::ChunkStored>>>,
    ) -> Result<Vec<pb::ChunkStored>> {
        let mut sends = stream::iter(sends).buffer_unordered(self.options.put_parallelism.max(1));
        let mut stored: Vec<pb::ChunkStored> = Vec::new();
        let mut renewal = Renewal::new(expires_in_ms);
        loop {
            tokio::select! {
                next = sends.next() => match next {
                    Some(chunk) => stored.push(chunk?),
                    None => return Ok(stored),
                },
                _ = renewal.tick() => renewal.renew(self, upload_id, &stored).await,
            }
        }
    }

    /// Store one chunk on min(R, 2) peers: down its pipeline, then, for every hop
    /// lost, down a pipeline of the targets not reached and replacements from the
    /// tracker, at most `put_attempts` pipelines in all. Returns the peers that
    /// acknowledged it durable and their receipts (what CommitUpload counts).
    pub(crate) async fn send_chunk(
        &self,
        up: &Upload<'_>,
        p: &pb::ChunkPlacement,
        body: &Body<'_>,
        len: u64,
    ) -> Result<(Vec<String>, Vec<pb::StoreReceipt>)> {
        let need = p.targets.len().min(2);
        let attempts = self.options.put_attempts.max(1);
        let mut stored: Vec<String> = Vec::new();
        let mut receipts: Vec<pb::StoreReceipt> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        let mut targets: Vec<pb::PeerRef> = Vec::new();
        for t in &p.targets {
            match up.avoid.why(&t.id) {
                // Failed earlier in this put: skipped, and the reason stays with the chunk.
                Some(why) => errors.push(format!("peer {}: {why} (earlier in this put)", t.id)),
                None => targets.push(t.clone()),
            }
        }
        // The tracker's tickets for this chunk: the original pipeline's, then one per
        // replacement. A completion pipeline mixes their targets, so it carries them all.
        let mut tickets: Vec<pb::PlacementTicket> = p.ticket.iter().cloned().collect();
        let mut tried = 0;
        while tried < attempts && stored.len() < need {
            let short = need.saturating_sub(stored.len() + targets.len());
            if short > 0 {
                match self.replace_targets(up, p.index, short, &stored).await {
                    Ok((more, ticket)) => {
                        tickets.extend(ticket);
                        for t in more {
                            if !stored.contains(&t.id) && !targets.iter().any(|x| x.id == t.id) {
                                targets.push(t);
                            }
                        }
                    }
                    Err(e) => errors.push(format!("no replacement targets: {e}")),
                }
            }
            if targets.is_empty() {
                break;
            }
            tried += 1;
            // Only the tickets naming a target of this pipeline (each peer checks them all).
            let mut carried: Vec<pb::PlacementTicket> = tickets
                .iter()
                .filter(|t| targets.iter().any(|x| t.pipeline.contains(&x.id)))
                .cloned()
                .collect();
            let keep = carried
                .len()
                .saturating_sub(shoal_common::ticket::MAX_TICKETS);
            carried.drain(..keep);
            let a = self.push_pipeline(body, p, len, &targets, carried).await?;
            for id in a.stored_on {
                if !stored.contains(&id) {
                    stored.push(id);
                }
            }
            for r in a.receipts {
                if !receipts.iter().any(|x| x.peer_id == r.peer_id) {
                    receipts.push(r);
                }
            }
            for (id, why) in &a.failed {
                warn!(chunk = p.index, peer = %id, error = %why, "pipeline hop failed; peer avoided for the rest of this put");
                up.avoid.add(id, why);
                errors.push(format!("peer {id}: {why}"));
            }
            // Next round: the targets the pipeline never reached, then replacements.
            targets.retain(|t| {
                !stored.contains(&t.id)
                    && !a.failed.iter().any(|(id, _)| id == &t.id)
                    && !up.avoid.has(&t.id)
            });
        }
        if stored.len() >= need {
            debug!(chunk = p.index, stored_on = ?stored, "chunk durable");
            return Ok((stored, receipts));
        }
        Err(ClientError::Other(format!(
            "chunk {} ({}) is durable on {} of the {need} peers required after {tried} pipeline attempt(s): {}",
            p.index,
            p.hash,
            stored.len(),
            if errors.is_empty() {
                "no target peers".to_string()
            } else {
                errors.join("; ")
            }
        )))
    }

    /// Send one chunk down one pipeline (`targets[0]` first) under the progress
    /// deadline: the head must keep taking bytes, and answer within one deadline per
    /// hop of the last one. A chunk the peers call bad (the file changed under us, a
    /// hash mismatch) fails the put.
    async fn push_pipeline(
        &self,
        body: &Body<'_>,
        p: &pb::ChunkPlacement,
        len: u64,
        targets: &[pb::PeerRef],
        tickets: Vec<pb::PlacementTicket>,
    ) -> Result<Pipeline> {
        let head = &targets[0];
        // The hops by id only: peers forward to the addresses the tracker registered.
        let header = pb::PutChunkHeader {
            hash: p.hash.clone(),
            size: len,
            forward: targets[1..]
                .iter()
                .map(|t| pb::PeerRef {
                    id: t.id.clone(),
                    ..Default::default()
                })
                .collect(),
            tickets,
        };
        let clock = Arc::new(Clock::new());
        let mut sent = 0u64;
        let ticks = clock.clone();
        let msgs = body.messages(len, header).inspect(move |m| {
            if let Some(pb::put_chunk_request::Msg::Data(d)) = &m.msg {
                sent += d.len() as u64;
            }
            ticks.tick(sent >= len);
        });
        let progress = self.options.progress_timeout;
        let span = info_span!("chunk.send", chunk.index = p.index, chunk.hash = %p.hash, peer = %head.id, pipeline = targets.len(), bytes = len);
        let result = match self.peer(&head.addr) {
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
            Ok(mut client) => {
                let call = client.put_chunk(msgs).instrument(span);
                tokio::select! {
                    r = call => r,
                    why = clock.stalled(progress, answer_deadline(progress, targets.len())) => {
                        Err(tonic::Status::deadline_exceeded(why))
                    }
                }
            }
        };
        match result {
            Ok(r) => {
                let r = r.into_inner();
                Ok(Pipeline {
                    stored_on: r.stored_on,
                    receipts: r.receipts,
                    failed: r
                        .failures
                        .into_iter()
                        .map(|f| (f.peer_id, f.error))
                        .collect(),
                })
            }
            Err(s)
                if s.code() == tonic::Code::DataLoss
                    || s.code() == tonic::Code::InvalidArgument =>
            {
                Err(ClientError::rpc(
                    &format!("put chunk {} to peer {}", p.index, head.id),
                    s,
                ))
            }
            // The head failed: nothing it forwarded counts (its next hops drop a chunk
            // whose stream broke); they stay candidates for the next pipeline.
            Err(s) => Ok(Pipeline {
                stored_on: Vec::new(),
                receipts: Vec::new(),
                failed: vec![(head.id.clone(), format!("{} ({})", s.message(), head.addr))],
            }),
        }
    }

    /// Ask the tracker for `want` new targets for chunk `index`, naming the peers that
    /// failed in this put (the tracker avoids them for the rest of it) and the ones
    /// that already hold the chunk.
    async fn replace_targets(
        &self,
        up: &Upload<'_>,
        index: u32,
        want: usize,
        holders: &[String],
    ) -> Result<(Vec<pb::PeerRef>, Option<pb::PlacementTicket>)> {
        let mut holders = holders.to_vec();
        holders.truncate(crate::failover::MAX_HINTED_PEERS);
        let req = pb::ReplaceTargetsRequest {
            upload_id: up.id.to_string(),
            index,
            want: want as u32,
            failed_peer_ids: up.avoid.list(),
            holder_peer_ids: holders,
        };
        let resp = self
            .trackers
            .call(
                &format!("put: replacement targets for chunk {index}"),
                move |mut c| {
                    let req = req.clone();
                    async move { c.replace_targets(req).await }
                },
            )
            .await?;
        debug!(chunk = index, reason = %resp.reason, "replacement targets");
        Ok((resp.targets, resp.ticket))
    }
}

/// What one put shares between its chunks.
pub(crate) struct Upload<'a> {
    pub(crate) id: &'a str,
    pub(crate) avoid: &'a Avoid,
}

/// The outcome of one pipeline: where the chunk is durable, which hops failed and why.
struct Pipeline {
    stored_on: Vec<String>,
    receipts: Vec<pb::StoreReceipt>,
    failed: Vec<(String, String)>,
}
