//! Download: chunks from several peers in parallel, each verified against its hash
//! (a failed or bad replica is reported and the next one continues from the same
//! offset), written in place into `PATH.part`, the whole file verified against its
//! id, then renamed. An interrupted get resumes: chunks already right in the `.part`
//! file are kept.
//!
//! The file's id is checked without reading the file again: each chunk is hashed as a
//! subtree of the file's BLAKE3 tree while it streams in, and the chunks' chaining
//! values are merged into the root ([`ChunkTree`]). That one hash checks every byte: a
//! chunk's own hash (its name) is computed only when the root does not match, from the
//! `.part` file, to find which chunks were bad; those are reported, their peers checked
//! and avoided, and they are fetched again with both hashes. Files whose chunks are not
//! subtrees (a chunk size that is not a power of two, or one chunk) are checked against
//! each chunk's name as they arrive, and by a second pass when there is no tree.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{stream, StreamExt, TryStreamExt};
use shoal_common::hash::{ChunkTree, Hash};
use shoal_proto::v1 as pb;
use tokio::sync::mpsc;
use tracing::{info_span, warn, Instrument};

use crate::failover::{peer_failed, pick, Avoid};
use crate::outfile::OutFile;
use crate::replica::ReplicaError;
use crate::verify::{verify_existing, verify_file, ChunkHash, Verified};
use crate::{Client, ClientError, Progress, Result};

#[derive(Debug, Clone)]
pub struct GetResult {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub path: PathBuf,
    pub chunks: u32,
    /// Chunks found already complete in the `.part` file.
    pub resumed_chunks: u32,
    /// Bytes served by each peer id.
    pub from_peers: Vec<(String, u64)>,
}

/// The `.part` file beside `out`.
pub fn part_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// Bytes for the output file: at this offset, of the chunk that ends at the last.
type Piece = (u64, Bytes, u64);

/// Where a get's bytes go: through the page cache, written by the task that received
/// them (no hand-off: a channel send and a thread wake-up per piece were two thirds of
/// the client's futex calls), or, with `O_DIRECT`, to the writer thread that gathers
/// aligned blocks ([`OutFile`]).
#[derive(Clone)]
enum Sink {
    Cached(Arc<std::fs::File>),
    Writer(mpsc::Sender<Piece>),
}

impl Sink {
    async fn put(&self, at: u64, data: Bytes, end: u64) -> std::result::Result<(), String> {
        match self {
            Sink::Cached(f) => {
                use std::os::unix::fs::FileExt;
                f.write_all_at(&data, at)
                    .map_err(|e| format!("writing the output: {e}"))
            }
            Sink::Writer(tx) => tx
                .send((at, data, end))
                .await
                .map_err(|_| "the output's writer failed".to_string()),
        }
    }
}

/// A chunk fetched into the `.part` file: the peers its bytes came from, in order.
struct Fetched {
    slot: usize,
    from: Vec<pb::PeerRef>,
    bytes: u64,
    cv: Verified,
}

impl Client {
    /// Download `name_or_id` into `out`.
    pub async fn get(
        &self,
        name_or_id: &str,
        out: &Path,
        progress: Arc<dyn Progress>,
    ) -> Result<GetResult> {
        let detail = self.stat(name_or_id).await?;
        self.get_detail(&detail, out, progress).await
    }

    /// Download a file whose detail is known (one `get` span over every chunk read).
    pub async fn get_detail(
        &self,
        detail: &pb::FileDetail,
        out: &Path,
        progress: Arc<dyn Progress>,
    ) -> Result<GetResult> {
        let s = detail.summary.clone().unwrap_or_default();
        let span = info_span!("get", file.name = %s.name, file.id = %s.id, file.size = s.size);
        self.get_detail_inner(detail, out, progress)
            .instrument(span)
            .await
    }

    async fn get_detail_inner(
        &self,
        detail: &pb::FileDetail,
        out: &Path,
        progress: Arc<dyn Progress>,
    ) -> Result<GetResult> {
        let summary = detail
            .summary
            .clone()
            .ok_or_else(|| ClientError::Other("tracker sent no summary".into()))?;
        let part = part_path(out);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part)
            .map_err(|e| ClientError::io(&part, e))?;
        let existing = file
            .metadata()
            .map_err(|e| ClientError::io(&part, e))?
            .len();
        let tree = ChunkTree::new(summary.size, summary.chunk_size);
        let mut done: Vec<Option<Verified>> = if existing == summary.size && existing > 0 {
            let (f, chunks, cs) = (
                file.try_clone().map_err(|e| ClientError::io(&part, e))?,
                detail.chunks.clone(),
                summary.chunk_size,
            );
            tokio::task::spawn_blocking(move || verify_existing(&f, &chunks, cs, tree))
                .await
                .map_err(|e| ClientError::Other(e.to_string()))?
        } else {
            // A stale `.part` of another size is emptied first; a new (empty) one is not
            // truncated: on ext4 truncating a file arms a flush of the whole file at close.
            if existing > 0 {
                file.set_len(0).map_err(|e| ClientError::io(&part, e))?;
            }
            file.set_len(summary.size)
                .map_err(|e| ClientError::io(&part, e))?;
            vec![None; detail.chunks.len()]
        };
        let resumed = done.iter().filter(|d| d.is_some()).count() as u32;
        progress.start(summary.size, "downloading");
        progress.advance(
            detail
                .chunks
                .iter()
                .zip(&done)
                .filter(|(_, d)| d.is_some())
                .map(|(c, _)| c.size)
                .sum(),
        );

        // Peers that fail or stall are avoided for the rest of this get.
        let avoid = Avoid::default();
        let want: Vec<usize> = (0..done.len()).filter(|&i| done[i].is_none()).collect();
        // Where the chunks are subtrees of the file's tree, a chunk's bytes are hashed
        // once, at its place in the tree: the root checks every byte against the id.
        // Only when it does not match is each chunk hashed against its name, to find
        // the bad ones, which are reported and fetched again, checked both ways.
        let deferred = tree.is_some();
        let fetched = self
            .fetch_into(&file, &part, detail, &want, deferred, &avoid, &progress)
            .await?;
        let mut by_peer: std::collections::BTreeMap<String, u64> = Default::default();
        let mut sources = vec![Vec::new(); done.len()];
        for f in fetched {
            done[f.slot] = Some(f.cv);
            if let Some(p) = f.from.last() {
                *by_peer.entry(p.id.clone()).or_default() += f.bytes;
            }
            sources[f.slot] = f.from;
        }

        // The whole file must hash to its id.
        let cvs: Vec<Verified> = done.iter().cloned().map(Option::flatten).collect();
        let checked = self.verify_whole(&part, detail, tree, cvs).await;
        match checked {
            Err(ClientError::Verify(why)) if deferred => {
                let bad = self.find_bad(&file, &part, detail, &want).await?;
                if bad.is_empty() {
                    return Err(ClientError::Verify(format!(
                        "{why}, though every chunk matches its hash: the chunk list does not make this file"
                    )));
                }
                for &slot in &bad {
                    let c = &detail.chunks[slot];
                    warn!(
                        chunk = c.index,
                        "chunk failed verification; fetching it again"
                    );
                    for p in &sources[slot] {
                        self.report_bad(&p.id, &c.hash, "client hash mismatch")
                            .await;
                        self.check_copy(p, c).await;
                        avoid.add(&p.id, "sent bytes that failed verification");
                    }
                }
                for f in self
                    .fetch_into(&file, &part, detail, &bad, false, &avoid, &progress)
                    .await?
                {
                    done[f.slot] = Some(f.cv);
                }
                let cvs: Vec<Verified> = done.into_iter().map(Option::flatten).collect();
                self.verify_whole(&part, detail, tree, cvs).await?;
            }
            other => other?,
        }
        std::fs::rename(&part, out).map_err(|e| ClientError::io(out, e))?;
        progress.finish();
        Ok(GetResult {
            id: summary.id,
            name: summary.name,
            size: summary.size,
            path: out.to_path_buf(),
            chunks: detail.chunks.len() as u32,
            resumed_chunks: resumed,
            from_peers: by_peer.into_iter().collect(),
        })
    }

    /// Fetch the chunks at `slots` of `detail` into the `.part` file (positional writes
    /// from any chunk, see [`Sink`]). `deferred`: each chunk is hashed only at its place
    /// in the file's tree, and checked by the root.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_into(
        &self,
        file: &std::fs::File,
        part: &Path,
        detail: &pb::FileDetail,
        slots: &[usize],
        deferred: bool,
        avoid: &Avoid,
        progress: &Arc<dyn Progress>,
    ) -> Result<Vec<Fetched>> {
        let summary = detail.summary.clone().unwrap_or_default();
        let tree = ChunkTree::new(summary.size, summary.chunk_size);
        let (sink, writer) = if self.options.direct_output {
            let (wtx, mut wrx) = mpsc::channel::<Piece>(32);
            let mut wfile = OutFile::new(
                file.try_clone().map_err(|e| ClientError::io(part, e))?,
                part,
                summary.chunk_size,
                summary.size,
                true,
            )
            .map_err(|e| ClientError::io(part, e))?;
            let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                while let Some((off, data, end)) = wrx.blocking_recv() {
                    wfile.write(off, &data, end)?;
                }
                // Chunks still under way were abandoned (one that started again
                // elsewhere wrote all its bytes anew): their blocks go with `wfile`.
                Ok(())
            });
            (Sink::Writer(wtx), Some(writer))
        } else {
            let f = file.try_clone().map_err(|e| ClientError::io(part, e))?;
            (Sink::Cached(Arc::new(f)), None)
        };
        // A vector, not a lazy map: the get's future must stay `Send` for any lifetime.
        let mut fetches = Vec::with_capacity(slots.len());
        for &slot in slots {
            let c = &detail.chunks[slot];
            let (sink, progress) = (sink.clone(), progress.clone());
            let offset = c.index as u64 * summary.chunk_size;
            fetches.push(async move {
                let hash = ChunkHash::new(c.index as u64, tree, !deferred);
                self.fetch_chunk(c, offset, hash, sink, progress.as_ref(), avoid)
                    .await
                    .map(|(from, bytes, cv)| Fetched {
                        slot,
                        from,
                        bytes,
                        cv,
                    })
            });
        }
        let fetched: Vec<Fetched> = stream::iter(fetches)
            .buffer_unordered(self.options.get_parallelism.max(1))
            .try_collect()
            .await?;
        drop(sink);
        if let Some(writer) = writer {
            writer
                .await
                .map_err(|e| ClientError::Other(e.to_string()))?
                .map_err(|e| ClientError::io(part, e))?;
        }
        Ok(fetched)
    }

    /// The whole file against its id ([`verify_file`]), on a blocking thread.
    async fn verify_whole(
        &self,
        part: &Path,
        detail: &pb::FileDetail,
        tree: Option<ChunkTree>,
        cvs: Vec<Verified>,
    ) -> Result<()> {
        let (p, s, chunks) = (
            part.to_path_buf(),
            detail.summary.clone().unwrap_or_default(),
            detail.chunks.clone(),
        );
        tokio::task::spawn_blocking(move || verify_file(&p, &s, &chunks, tree, &cvs))
            .await
            .map_err(|e| ClientError::Other(e.to_string()))?
    }

    /// Which of the chunks at `slots` do not hold their hash's bytes in the `.part` file.
    async fn find_bad(
        &self,
        file: &std::fs::File,
        part: &Path,
        detail: &pb::FileDetail,
        slots: &[usize],
    ) -> Result<Vec<usize>> {
        let f = file.try_clone().map_err(|e| ClientError::io(part, e))?;
        let chunks: Vec<pb::ChunkReplicas> =
            slots.iter().map(|&s| detail.chunks[s].clone()).collect();
        let (cs, slots) = (
            detail.summary.as_ref().map_or(0, |s| s.chunk_size),
            slots.to_vec(),
        );
        let found = tokio::task::spawn_blocking(move || verify_existing(&f, &chunks, cs, None))
            .await
            .map_err(|e| ClientError::Other(e.to_string()))?;
        Ok(slots
            .into_iter()
            .zip(found)
            .filter(|(_, ok)| ok.is_none())
            .map(|(s, _)| s)
            .collect())
    }

    /// Fetch one chunk, verified. Replicas are tried starting at `index mod n` so
    /// parallel chunks spread over peers, peers that failed in this get last; a failed
    /// or stalled stream continues on another replica from the offset already
    /// verified; a mismatch restarts the chunk elsewhere.
    async fn fetch_chunk(
        &self,
        c: &pb::ChunkReplicas,
        file_offset: u64,
        mut hasher: ChunkHash,
        sink: Sink,
        progress: &dyn Progress,
        avoid: &Avoid,
    ) -> Result<(Vec<pb::PeerRef>, u64, Verified)> {
        let expected: Hash = c
            .hash
            .parse()
            .map_err(|e| ClientError::Other(format!("tracker sent a bad hash: {e}")))?;
        let n = c.replicas.len();
        if n == 0 && c.size > 0 {
            return Err(ClientError::Other(format!(
                "chunk {} has no live replica",
                c.index
            )));
        }
        let order: Vec<&pb::PeerRef> = (0..n)
            .map(|k| &c.replicas[(c.index as usize + k) % n.max(1)])
            .collect();
        let mut pos = 0u64;
        let mut contributors: Vec<&pb::PeerRef> = Vec::new();
        let mut errors = Vec::new();
        let mut tries = vec![0u32; n];
        // n + 1 reads in all: each replica one, and one more after a mismatch.
        let attempts = if n == 0 { 0 } else { n + 1 };
        for _ in 0..attempts {
            let k = pick(&order, &tries, avoid);
            tries[k] += 1;
            let peer = order[k];
            let span = info_span!("chunk.get", chunk.index = c.index, chunk.hash = %c.hash, peer = %peer.id, offset = pos);
            match self
                .stream_range(peer, c, pos, &mut hasher, file_offset, &sink, progress)
                .instrument(span)
                .await
            {
                Ok(got) => {
                    pos += got;
                    contributors.push(peer);
                }
                Err((got, code, e)) => {
                    warn!(chunk = c.index, peer = %peer.id, error = %e, offset = pos + got, "replica failed; continuing on another");
                    errors.push(format!("{}: {e}", peer.id));
                    if peer_failed(code) && avoid.add(&peer.id, &e.to_string()) {
                        warn!(peer = %peer.id, "peer avoided for the rest of this get");
                    }
                    if code == Some(tonic::Code::DataLoss) {
                        // The peer found its copy corrupt: drop what it sent, start over elsewhere.
                        self.report_bad(&peer.id, &c.hash, &e).await;
                        hasher.reset();
                        pos = 0;
                        contributors.clear();
                        continue;
                    }
                    pos += got;
                    if got > 0 {
                        contributors.push(peer);
                    }
                    if pos < c.size {
                        continue;
                    }
                }
            }
            if pos == c.size {
                // A deferred check (`None`) is the file root's to make.
                if hasher.own_matches(&expected) != Some(false) {
                    let from = contributors.into_iter().cloned().collect();
                    return Ok((from, c.size, hasher.chaining_value()));
                }
                for p in &contributors {
                    self.report_bad(&p.id, &c.hash, "client hash mismatch")
                        .await;
                    self.check_copy(p, c).await;
                }
                errors.push(format!(
                    "bytes from {} failed verification",
                    contributors
                        .iter()
                        .map(|p| p.id.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ));
                hasher.reset();
                pos = 0;
                contributors.clear();
            }
        }
        if c.size == 0 {
            return Ok((Vec::new(), 0, hasher.chaining_value()));
        }
        Err(ClientError::Other(format!(
            "chunk {} could not be fetched from any replica: {}",
            c.index,
            errors.join("; ")
        )))
    }

    /// Stream `[pos, size)` of a chunk from one peer into the hasher and the writer.
    /// Returns the bytes received (also on error, with the error).
    #[allow(clippy::too_many_arguments)]
    async fn stream_range(
        &self,
        peer: &pb::PeerRef,
        c: &pb::ChunkReplicas,
        pos: u64,
        hasher: &mut ChunkHash,
        file_offset: u64,
        sink: &Sink,
        progress: &dyn Progress,
    ) -> std::result::Result<u64, ReplicaError> {
        let mut r = self.open_replica(peer, c, pos).await?;
        while let Some(data) = r.next().await? {
            let len = data.len() as u64;
            hasher.update(&data);
            let at = file_offset + pos + r.got - len;
            // A local failure is not the peer's: `ABORTED` does not avoid it.
            sink.put(at, data, file_offset + c.size)
                .await
                .map_err(|e| (r.got - len, Some(tonic::Code::Aborted), e))?;
            progress.advance(len);
        }
        Ok(r.got)
    }
}
