//! `shoal.v1.Peer` over gRPC: chunks in (verified while streaming, forwarded down the
//! pipeline as they arrive), chunks out (read straight from disk; the reader verifies, and
//! with `verify` the peer re-hashes its copy too), copies from other peers.
//!
//! Every transfer has a progress deadline (`transfer.progress_timeout`): a sender,
//! reader or next hop that moves no byte for that long is treated as failed, so a
//! frozen peer costs a pipeline seconds, not minutes. A hop that fails is reported in
//! the answer (`failures`) and the copies that did land are still listed.

use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use shoal_common::hash::{self, Hash};
use shoal_common::ticket::TicketKeys;
use shoal_proto::v1 as pb;
use shoal_proto::v1::peer_server::Peer as PeerRpc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, info_span, warn, Instrument};

use crate::store::{ChunkStore, Deleted, StoreError};

/// Largest chunk a peer accepts (the tracker's maximum chunk size is far below).
pub const MAX_CHUNK_BYTES: u64 = 1 << 30;
/// Messages buffered between the network and the disk for one transfer.
const PIPE_DEPTH: usize = 8;

#[derive(Default)]
pub struct Counters {
    /// Reads and writes in progress (what the tracker sees as load).
    pub active_transfers: AtomicU32,
    /// Writes (PutChunk, ReplicateChunk) and reads (GetChunk) in progress, each
    /// against its own limit.
    pub active_writes: AtomicU32,
    pub active_reads: AtomicU32,
    /// PutChunk calls ever begun: a stopping peer serves until they have been quiet.
    pub writes_started: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub chunks_received: AtomicU64,
    pub chunks_served: AtomicU64,
    pub verify_failures: AtomicU64,
    pub scrubbed_bytes: AtomicU64,
    pub scrub_failures: AtomicU64,
}

/// What the peer shares between its gRPC service and its background loops.
pub struct PeerCore {
    pub id: String,
    pub store: Arc<ChunkStore>,
    pub counters: Counters,
    /// Corrupt chunks found on read, for the agent to report.
    pub corrupt: mpsc::UnboundedSender<Hash>,
    /// Channels that present the cluster token: only ever to configured trackers and
    /// to peers at addresses from `directory` or a tracker's order.
    pub channels: shoal_common::grpc::Channels,
    /// Checks placement tickets on PutChunk.
    pub tickets: shoal_common::ticket::TicketKeys,
    /// Peer id → address, from the tracker: where a pipeline is forwarded.
    pub directory: crate::directory::Directory,
    /// Writes served at once (`SHOAL_MAX_TRANSFERS`).
    pub max_transfers: u32,
    /// Reads served at once (`SHOAL_MAX_READS`).
    pub max_reads: u32,
    /// A transfer that moves no byte for this long is abandoned.
    pub progress_timeout: Duration,
    /// Fault injection (tests only; inert by default).
    pub faults: Arc<Faults>,
}

/// Fault injection for in-process tests, in the manner of tikv's failpoints: inert
/// unless a test arms it. Armed, the peer behaves like a frozen process for chunk
/// transfers (it accepts calls and connections but moves no chunk byte) or refuses
/// uploads. Heartbeats continue, so the tracker does not learn of the fault: only the
/// transfer deadlines do.
#[derive(Debug)]
pub struct Faults {
    /// Chunk bytes the peer still moves (in or out) before it freezes; u64::MAX = never.
    budget: AtomicU64,
    refuse_puts: AtomicBool,
    /// Transfers currently held by a freeze, and ever held.
    stalled: AtomicU32,
    held: AtomicU64,
    /// GetChunk and PutChunk calls that arrived while frozen.
    pub gets_while_frozen: AtomicU64,
    pub puts_while_frozen: AtomicU64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            budget: AtomicU64::new(u64::MAX),
            refuse_puts: AtomicBool::new(false),
            stalled: AtomicU32::new(0),
            held: AtomicU64::new(0),
            gets_while_frozen: AtomicU64::new(0),
            puts_while_frozen: AtomicU64::new(0),
        }
    }
}

impl Faults {
    /// Freeze once `bytes` more chunk bytes have moved through this peer.
    pub fn freeze_after(&self, bytes: u64) {
        self.budget.store(bytes, Relaxed);
    }

    pub fn freeze(&self) {
        self.freeze_after(0);
    }

    pub fn thaw(&self) {
        self.budget.store(u64::MAX, Relaxed);
    }

    pub fn frozen(&self) -> bool {
        self.budget.load(Relaxed) == 0
    }

    /// Transfers currently held by the freeze.
    pub fn stalled(&self) -> u32 {
        self.stalled.load(Relaxed)
    }

    /// Transfers the freeze has held so far.
    pub fn held(&self) -> u64 {
        self.held.load(Relaxed)
    }

    /// Answer every PutChunk with UNAVAILABLE.
    pub fn refuse_puts(&self, on: bool) {
        self.refuse_puts.store(on, Relaxed);
    }

    fn spend(&self, n: u64) {
        let _ = self.budget.fetch_update(Relaxed, Relaxed, |b| {
            (b != u64::MAX).then(|| b.saturating_sub(n))
        });
    }

    /// Hold an async transfer while frozen.
    async fn hold(&self) {
        if !self.frozen() {
            return;
        }
        self.stalled.fetch_add(1, Relaxed);
        self.held.fetch_add(1, Relaxed);
        while self.frozen() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.stalled.fetch_sub(1, Relaxed);
    }

    /// Hold a blocking transfer while frozen, or until `gone` says its reader left.
    fn hold_blocking(&self, gone: impl Fn() -> bool) {
        if !self.frozen() {
            return;
        }
        self.stalled.fetch_add(1, Relaxed);
        self.held.fetch_add(1, Relaxed);
        while self.frozen() && !gone() {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stalled.fetch_sub(1, Relaxed);
    }
}

/// Send on a bounded channel from a blocking thread, giving up when the receiver takes
/// nothing for `within` (a reader that stopped reading) or is gone.
fn send_blocking<T>(tx: &mpsc::Sender<T>, msg: T, within: Duration) -> Result<(), &'static str> {
    let rt = tokio::runtime::Handle::current();
    match rt.block_on(tokio::time::timeout(within, tx.send(msg))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("reader went away"),
        Err(_) => Err("reader stalled"),
    }
}

/// How long to wait for the answer of a pipeline whose bytes are all sent: each hop
/// may spend one progress deadline discovering that its own next hop is stuck.
pub fn answer_deadline(progress: Duration, hops: usize) -> Duration {
    progress * (hops as u32 + 1)
}

struct Active<'a>(&'a AtomicU32);
impl<'a> Active<'a> {
    fn new(c: &'a AtomicU32) -> Self {
        c.fetch_add(1, Relaxed);
        Active(c)
    }

    /// Count a transfer, or refuse it when the peer already serves `max`.
    fn admit(c: &'a AtomicU32, max: u32) -> Result<Self, Status> {
        let a = Active::new(c);
        if c.load(Relaxed) > max {
            return Err(Status::resource_exhausted(format!(
                "peer busy: {max} transfers in progress; try another replica"
            )));
        }
        Ok(a)
    }
}
impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl PeerCore {
    /// The write mark once a copy is in the store: every inventory snapshotted at this
    /// mark or later lists it.
    fn mark_stored(&self) -> pb::WriteMark {
        let (boot, seq) = self.store.advance_mark();
        pb::WriteMark { boot, seq }
    }

    /// Receive a chunk from a stream of byte messages into the store, verifying it.
    /// Runs the disk side on a blocking thread fed through a bounded channel.
    async fn receive(
        self: &Arc<Self>,
        h: Hash,
        size: u64,
        mut next: impl FnMut() -> futures::future::BoxFuture<'static, Result<Option<Bytes>, Status>>,
        mut tee: Option<mpsc::Sender<pb::PutChunkRequest>>,
    ) -> Result<Received, Status> {
        let progress = self.progress_timeout;
        let mut tee_stalled = false;
        let (tx, mut rx) = mpsc::channel::<Bytes>(PIPE_DEPTH);
        let store = self.store.clone();
        // Set when the stream fails: the writer may already hold every declared byte
        // (an extra message after them), and must then drop the chunk, not commit it.
        let abandoned = Arc::new(AtomicBool::new(false));
        let writer = tokio::task::spawn_blocking({
            let abandoned = abandoned.clone();
            move || -> Result<bool, StoreError> {
                let mut w = store.writer(h, size)?;
                while let Some(b) = rx.blocking_recv() {
                    w.write(&b)?;
                }
                if abandoned.load(Acquire) {
                    return Ok(false); // dropping `w` removes its temp file
                }
                w.commit()
            }
        });
        let mut received = 0u64;
        let mut early: Option<Status> = None;
        loop {
            self.faults.hold().await;
            let data = match tokio::time::timeout(progress, next()).await {
                Ok(Ok(Some(d))) => d,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    early = Some(e);
                    break;
                }
                Err(_) => {
                    early = Some(Status::deadline_exceeded(format!(
                        "no bytes of chunk {h} for {progress:?} after {received} bytes: sender stalled"
                    )));
                    break;
                }
            };
            self.faults.spend(data.len() as u64);
            received += data.len() as u64;
            if received > size {
                early = Some(Status::invalid_argument(format!(
                    "chunk {h} declared {size} bytes, received more"
                )));
                break;
            }
            if let Some(t) = &tee {
                let msg = pb::PutChunkRequest {
                    msg: Some(pb::put_chunk_request::Msg::Data(data.clone())),
                };
                match tokio::time::timeout(progress, t.send(msg)).await {
                    Ok(Ok(())) => {}
                    // Downstream failed; its error is reported when joined.
                    Ok(Err(_)) => tee = None,
                    // Downstream took nothing for a whole deadline: it is stuck.
                    Err(_) => {
                        tee = None;
                        tee_stalled = true;
                    }
                }
            }
            if tx.send(data).await.is_err() {
                break; // the writer failed; its error is below
            }
        }
        if early.is_some() {
            abandoned.store(true, Release);
        }
        drop(tx);
        drop(tee);
        if let Some(e) = early {
            writer.abort();
            return Err(e);
        }
        let stored = writer
            .await
            .map_err(|e| Status::internal(format!("writer task: {e}")))?;
        self.counters.bytes_in.fetch_add(received, Relaxed);
        match stored {
            Ok(_) => {
                self.counters.chunks_received.fetch_add(1, Relaxed);
                Ok(Received { tee_stalled })
            }
            Err(e @ StoreError::Mismatch { .. }) => {
                self.counters.verify_failures.fetch_add(1, Relaxed);
                warn!(chunk = %h, "received chunk failed verification; discarded");
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A chunk received and stored.
struct Received {
    /// The next hop took no byte for a whole progress deadline and was cut off.
    tee_stalled: bool,
}

pub struct PeerService {
    pub core: Arc<PeerCore>,
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl PeerRpc for PeerService {
    async fn put_chunk(
        &self,
        req: Request<Streaming<pb::PutChunkRequest>>,
    ) -> R<pb::PutChunkResponse> {
        let core = &self.core;
        core.counters.writes_started.fetch_add(1, Relaxed);
        if core.faults.frozen() {
            core.faults.puts_while_frozen.fetch_add(1, Relaxed);
        }
        if core.faults.refuse_puts.load(Relaxed) {
            return Err(Status::unavailable("peer refuses uploads (fault injected)"));
        }
        let _slot = Active::admit(&core.counters.active_writes, core.max_transfers)?;
        let _active = Active::new(&core.counters.active_transfers);
        let mut stream = req.into_inner();
        let progress = core.progress_timeout;
        let first = tokio::time::timeout(progress, stream.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!("no PutChunk header within {progress:?}"))
            })??;
        let header = match first {
            Some(pb::PutChunkRequest {
                msg: Some(pb::put_chunk_request::Msg::Header(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "PutChunk must start with a header",
                ))
            }
        };
        let h = hash::parse(&header.hash)?;
        if header.size > MAX_CHUNK_BYTES {
            return Err(Status::invalid_argument(format!(
                "chunk of {} bytes exceeds the {MAX_CHUNK_BYTES}-byte limit",
                header.size
            )));
        }
        if header.forward.len() > 16 {
            return Err(Status::invalid_argument("pipeline longer than 16 peers"));
        }
        // Only the ids of the hops count: their addresses come from the tracker.
        let mut forward: Vec<String> = header
            .forward
            .iter()
            .map(|p| p.id.clone())
            .filter(|id| *id != core.id)
            .collect();
        {
            let hops: Vec<&str> = forward.iter().map(String::as_str).collect();
            core.tickets
                .check_put(&header.tickets, &core.id, &h.to_hex(), header.size, &hops)
                .inspect_err(|e| warn!(chunk = %h, error = %e, "PutChunk refused"))?;
        }
        let span = info_span!("chunk.put", chunk = %h, bytes = header.size, peer = %core.id, forward = forward.len());
        // Hops after this one, for the answer deadline.
        let hops_after = forward.len();

        // Downstream: open the next hop now and tee every message to it.
        let downstream = if forward.is_empty() {
            None
        } else {
            let next = forward.remove(0);
            let (tx, rx) = mpsc::channel::<pb::PutChunkRequest>(PIPE_DEPTH);
            let first = pb::PutChunkRequest {
                msg: Some(pb::put_chunk_request::Msg::Header(pb::PutChunkHeader {
                    hash: header.hash.clone(),
                    size: header.size,
                    forward: forward
                        .into_iter()
                        .map(|id| pb::PeerRef {
                            id,
                            ..Default::default()
                        })
                        .collect(),
                    tickets: header.tickets.clone(),
                })),
            };
            tx.send(first)
                .await
                .map_err(|_| Status::internal("pipeline channel closed"))?;
            let fspan =
                info_span!(parent: &span, "chunk.forward", chunk = %h, from = %core.id, to = %next);
            let c = core.clone();
            let to = next.clone();
            let task = tokio::spawn(
                async move {
                    // The address the tracker registered for the next hop, never one
                    // from the client: the cluster token goes to cluster members only.
                    let addr = c.directory.addr(&c.channels, &to).await?;
                    let mut client = pb::peer_client::PeerClient::new(c.channels.get(&addr)?);
                    let r = client.put_chunk(ReceiverStream::new(rx)).await;
                    if r.as_ref()
                        .is_err_and(|e| e.code() == tonic::Code::Unavailable)
                    {
                        c.directory.forget(&to);
                    }
                    r.map(|r| r.into_inner())
                }
                .instrument(fspan),
            );
            Some((tx, task, next))
        };
        let stream = Arc::new(tokio::sync::Mutex::new(stream));
        let next = move || {
            let s = stream.clone();
            async move {
                let mut s = s.lock().await;
                match s.message().await? {
                    Some(pb::PutChunkRequest {
                        msg: Some(pb::put_chunk_request::Msg::Data(d)),
                    }) => Ok(Some(d)),
                    Some(_) => Err(Status::invalid_argument(
                        "PutChunk carries one header, then data only",
                    )),
                    None => Ok(None),
                }
            }
            .boxed()
        };
        let (tee, task, next_id) = match downstream {
            Some((tx, task, id)) => (Some(tx), Some(task), id),
            None => (None, None, String::new()),
        };
        let local = core
            .receive(h, header.size, next, tee)
            .instrument(span.clone())
            .await;
        let mut resp = pb::PutChunkResponse::default();
        let tee_stalled = match &local {
            Ok(r) => {
                resp.stored_on.push(core.id.clone());
                // check_put saw a ticket naming this peer: its upload is the receipt's.
                let upload = TicketKeys::upload_for(&header.tickets, &core.id).unwrap_or_default();
                resp.receipts.push(core.tickets.receipt(
                    &core.id,
                    upload,
                    &h.to_hex(),
                    header.size,
                    Some(core.mark_stored()),
                ));
                r.tee_stalled
            }
            Err(e) => {
                if let Some(t) = task {
                    t.abort();
                }
                return Err(Status::new(e.code(), e.message().to_string()));
            }
        };
        if let Some(mut task) = task {
            let wait = answer_deadline(progress, hops_after);
            let answer = if tee_stalled {
                task.abort();
                None
            } else {
                tokio::time::timeout(wait, &mut task).await.ok()
            };
            let Some(answer) = answer else {
                task.abort();
                let why = if tee_stalled {
                    format!("next hop took no bytes for {progress:?}")
                } else {
                    format!("next hop did not answer within {wait:?}")
                };
                warn!(chunk = %h, next = %next_id, error = %why, "pipeline hop stalled; cut off");
                resp.failures.push(pb::ForwardFailure {
                    peer_id: next_id,
                    error: why,
                });
                return Ok(Response::new(resp));
            };
            match answer {
                Ok(Ok(down)) => {
                    resp.stored_on.extend(down.stored_on);
                    resp.failures.extend(down.failures);
                    resp.receipts.extend(down.receipts);
                }
                Ok(Err(e)) => resp.failures.push(pb::ForwardFailure {
                    peer_id: next_id,
                    error: e.message().to_string(),
                }),
                Err(e) => resp.failures.push(pb::ForwardFailure {
                    peer_id: next_id,
                    error: e.to_string(),
                }),
            }
        }
        span.in_scope(|| {
            info!(
                verify = "ok",
                stored_on = resp.stored_on.len(),
                "chunk stored"
            )
        });
        Ok(Response::new(resp))
    }

    type GetChunkStream = ReceiverStream<Result<pb::ChunkData, Status>>;

    async fn get_chunk(&self, req: Request<pb::GetChunkRequest>) -> R<Self::GetChunkStream> {
        let req = req.into_inner();
        let h = hash::parse(&req.hash)?;
        let core = self.core.clone();
        if core.faults.frozen() {
            core.faults.gets_while_frozen.fetch_add(1, Relaxed);
        }
        // The slot is taken here, not in the reading task: a burst of requests must not
        // all pass the check before any task has counted itself.
        let slot = Active::admit(&core.counters.active_reads, core.max_reads).map_err(|_| {
            Status::resource_exhausted(format!(
                "peer busy: {} reads in progress; try another replica",
                core.max_reads
            ))
        })?;
        let mut reader = {
            let store = core.store.clone();
            tokio::task::spawn_blocking(move || store.reader(&h))
                .await
                .map_err(|e| Status::internal(e.to_string()))??
        };
        let len = reader.len();
        if req.offset > len
            || req
                .offset
                .checked_add(req.length)
                .is_none_or(|end| end > len)
        {
            return Err(Status::out_of_range(format!(
                "range {}+{} is outside chunk {h} of {len} bytes",
                req.offset, req.length
            )));
        }
        let end = if req.length == 0 {
            len
        } else {
            req.offset + req.length
        };
        let (tx, rx) = mpsc::channel(PIPE_DEPTH);
        let verify = req.verify;
        let span = info_span!("chunk.get", chunk = %h, peer = %core.id, offset = req.offset, bytes = end - req.offset, verify);
        // The reading task gives the slot back when it ends.
        std::mem::forget(slot);
        tokio::task::spawn_blocking(move || {
            let _e = span.enter();
            let _active = Active::new(&core.counters.active_transfers);
            let _slot = Active(&core.counters.active_reads);
            // Without `verify` only the range is read: the reader hashes every byte it
            // gets against the chunk's name and reports a copy that fails, and scrub
            // re-hashes copies at rest. With it, the whole copy is hashed as before and
            // a copy that no longer matches is refused, quarantined and reported.
            let from = if verify { 0 } else { req.offset };
            let mut hasher = verify.then(blake3::Hasher::new);
            let mut pos = from;
            let stop = if verify { len } else { end };
            reader.advise(from, stop - from);
            while pos < stop {
                let want = (stop - pos).min(shoal_common::STREAM_MESSAGE_BYTES as u64) as usize;
                let buf = match reader.read_at(pos, want) {
                    Ok(b) if b.is_empty() => break,
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(format!(
                            "reading chunk {h}: {e}"
                        ))));
                        return;
                    }
                };
                let n = buf.len();
                if let Some(hasher) = &mut hasher {
                    hasher.update(&buf);
                }
                let (s, e) = (pos.max(req.offset), (pos + n as u64).min(end));
                if s < e {
                    let data = buf.slice((s - pos) as usize..(e - pos) as usize);
                    core.faults.hold_blocking(|| tx.is_closed());
                    core.faults.spend(data.len() as u64);
                    core.counters
                        .bytes_out
                        .fetch_add(data.len() as u64, Relaxed);
                    let msg = Ok(pb::ChunkData { data });
                    if let Err(why) = send_blocking(&tx, msg, core.progress_timeout) {
                        // The reader went away or stopped reading: free the thread.
                        warn!(error = why, "chunk read abandoned");
                        return;
                    }
                }
                pos += n as u64;
            }
            let Some(hasher) = hasher else {
                if pos < end {
                    // The file is shorter than when it was opened: not a copy to serve.
                    let _ = tx.blocking_send(Err(Status::internal(format!(
                        "chunk {h} ended at byte {pos} of {end} while being read"
                    ))));
                    return;
                }
                core.counters.chunks_served.fetch_add(1, Relaxed);
                info!("chunk served");
                return;
            };
            if pos == len && Hash::from(hasher.finalize()) == h {
                core.counters.chunks_served.fetch_add(1, Relaxed);
                info!(verify = "ok", "chunk served");
            } else {
                core.counters.verify_failures.fetch_add(1, Relaxed);
                warn!(verify = "mismatch", "stored chunk is corrupt; quarantined");
                let _ = core.store.quarantine(&h);
                let _ = core.corrupt.send(h);
                let _ = tx.blocking_send(Err(Status::data_loss(format!(
                    "chunk {h} is corrupt on peer {}",
                    core.id
                ))));
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn verify_chunk(
        &self,
        req: Request<pb::VerifyChunkRequest>,
    ) -> R<pb::VerifyChunkResponse> {
        let h = hash::parse(&req.into_inner().hash)?;
        let core = self.core.clone();
        if !core.store.has(&h) {
            return Ok(Response::new(pb::VerifyChunkResponse::default()));
        }
        let c = core.clone();
        let verified = tokio::task::spawn_blocking(move || c.store.verify(&h, &mut |_| {}))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let (present, intact) = match verified {
            Ok(true) => (true, true),
            Ok(false) => {
                core.counters.verify_failures.fetch_add(1, Relaxed);
                warn!(chunk = %h, "reported copy is corrupt; quarantined");
                let _ = core.store.quarantine(&h);
                let _ = core.corrupt.send(h);
                (true, false)
            }
            Err(StoreError::Missing(_)) => (false, false),
            Err(e) => return Err(e.into()),
        };
        info!(chunk = %h, intact, "copy verified on request");
        Ok(Response::new(pb::VerifyChunkResponse { present, intact }))
    }

    async fn has_chunks(&self, req: Request<pb::HasChunksRequest>) -> R<pb::HasChunksResponse> {
        let req = req.into_inner();
        let present = req
            .hashes
            .iter()
            .map(|s| hash::parse(s).map(|h| self.core.store.has(&h)))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::HasChunksResponse { present }))
    }

    async fn delete_chunks(
        &self,
        req: Request<pb::DeleteChunksRequest>,
    ) -> R<pb::DeleteChunksResponse> {
        let req = req.into_inner();
        let hashes: Vec<Hash> = req
            .hashes
            .iter()
            .map(|s| hash::parse(s))
            .collect::<Result<_, _>>()?;
        let mark = req.spare_written_after.map(|m| (m.boot, m.seq));
        let store = self.core.store.clone();
        let (deleted, spared) = tokio::task::spawn_blocking(move || {
            let (mut deleted, mut spared) = (0u32, Vec::new());
            for h in &hashes {
                let done = match mark {
                    Some(mark) => store.delete_unless_written_after(h, mark)?,
                    None if store.delete(h)? => Deleted::Removed,
                    None => Deleted::Absent,
                };
                match done {
                    Deleted::Removed => deleted += 1,
                    Deleted::Absent => {}
                    Deleted::Spared => spared.push(h.to_hex()),
                }
            }
            Ok::<_, StoreError>((deleted, spared))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        info!(deleted, spared = spared.len(), "chunks deleted on request");
        let (boot, seq) = self.core.store.advance_mark();
        Ok(Response::new(pb::DeleteChunksResponse {
            deleted,
            spared,
            mark: Some(pb::WriteMark { boot, seq }),
        }))
    }

    async fn replicate_chunk(
        &self,
        req: Request<pb::ReplicateChunkRequest>,
    ) -> R<pb::ReplicateChunkResponse> {
        let req = req.into_inner();
        let h = hash::parse(&req.hash)?;
        if req.size > MAX_CHUNK_BYTES {
            return Err(Status::invalid_argument("chunk too large"));
        }
        let core = self.core.clone();
        if core.store.claim(&h) {
            return Ok(Response::new(pb::ReplicateChunkResponse {
                source_peer_id: core.id.clone(),
                bytes: 0,
                mark: Some(core.mark_stored()),
            }));
        }
        let _active = Active::new(&core.counters.active_transfers);
        let _slot = Active::new(&core.counters.active_writes);
        let mut last = Status::invalid_argument("no source peers given");
        for src in req.sources.iter().filter(|s| s.id != core.id) {
            let span = info_span!("chunk.replicate", chunk = %h, source = %src.id, target = %core.id, bytes = req.size);
            let result = async {
                let mut c = pb::peer_client::PeerClient::new(core.channels.get(&src.addr)?);
                let progress = core.progress_timeout;
                // The source re-hashes its copy while serving it: a corrupt source is
                // quarantined and reported by the copy that exposes it.
                let open = c.get_chunk(pb::GetChunkRequest {
                    hash: h.to_hex(),
                    offset: 0,
                    length: 0,
                    verify: true,
                });
                let stream = tokio::time::timeout(progress, open)
                    .await
                    .map_err(|_| {
                        Status::deadline_exceeded(format!(
                            "source {} did not answer within {progress:?}",
                            src.id
                        ))
                    })??
                    .into_inner();
                let stream = Arc::new(tokio::sync::Mutex::new(stream));
                let next = move || {
                    let s = stream.clone();
                    async move { Ok(s.lock().await.message().await?.map(|m| m.data)) }.boxed()
                };
                core.receive(h, req.size, next, None).await
            }
            .instrument(span)
            .await;
            match result {
                Ok(_) => {
                    info!(chunk = %h, source = %src.id, "chunk copied from peer");
                    return Ok(Response::new(pb::ReplicateChunkResponse {
                        source_peer_id: src.id.clone(),
                        bytes: req.size,
                        mark: Some(core.mark_stored()),
                    }));
                }
                Err(e) => {
                    warn!(chunk = %h, source = %src.id, error = %e.message(), "copy from source failed; trying the next");
                    last = e;
                }
            }
        }
        Err(last)
    }
}
