//! The peer's side of the raw-get path (`shoal_common::rawget`): connections on the
//! gRPC port that open with its magic are served here, every other one goes to tonic.
//!
//! A request is checked as `GetChunk` is (the token's role, the range, the read slots,
//! the fault injection), then its bytes go with `sendfile` from the chunk file to the
//! socket on a blocking thread, under the progress deadline (`SO_SNDTIMEO`): a reader
//! that stops reading frees the thread. Nothing is hashed here: the reader verifies
//! every byte against the chunk's name, and scrub re-hashes copies at rest.

use std::fs::File;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use shoal_common::auth::Tokens;
use shoal_common::hash;
use shoal_common::rawget::{join_trace, read_frame, write_frame, MAGIC};
use shoal_proto::v1 as pb;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{info, info_span, warn, Instrument};

use crate::service::{range_end, Active, PeerCore};

/// How long a new connection may take to show its first bytes before it is handed to
/// gRPC as it is.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a raw-get connection may sit idle between requests.
const IDLE: Duration = Duration::from_secs(60);
/// Bytes per `sendfile` call: the fault injection and the counters move in these steps.
const STEP: usize = shoal_common::STREAM_MESSAGE_BYTES;

/// What serving raw gets needs.
pub struct Raw {
    pub core: Arc<PeerCore>,
    pub tokens: Tokens,
    /// Cancelled once the gRPC server has stopped: raw connections end with it.
    pub stop: CancellationToken,
}

/// The accepted connections for tonic's `serve_with_incoming…`, with the raw-get ones
/// (with `raw`) taken out and served here. Ends with tonic: when it drops the stream,
/// the listener closes.
pub fn incoming(
    listener: TcpListener,
    raw: Option<Arc<Raw>>,
) -> ReceiverStream<io::Result<TcpStream>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let s = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors and the like: tonic logs it; back off meanwhile.
                    if tx.send(Err(e)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            shoal_common::net::tune(&s);
            let Some(raw) = raw.clone() else {
                if tx.send(Ok(s)).await.is_err() {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                if sniff(&s).await {
                    serve(s, raw).await;
                } else {
                    let _ = tx.send(Ok(s)).await;
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Whether the connection opens with the raw-get magic (peeked: nothing is consumed).
async fn sniff(s: &TcpStream) -> bool {
    let mut buf = [0u8; MAGIC.len()];
    let deadline = tokio::time::Instant::now() + SNIFF_TIMEOUT;
    loop {
        let n = match tokio::time::timeout_at(deadline, s.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return false,
        };
        if buf[..n] != MAGIC[..n] {
            return false;
        }
        if n == MAGIC.len() {
            return true;
        }
        // A prefix of the magic so far: wait for the rest.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Serve one raw-get connection, request after request, until it closes, idles or the
/// peer stops.
async fn serve(mut s: TcpStream, raw: Arc<Raw>) {
    let mut magic = [0u8; MAGIC.len()];
    if s.read_exact(&mut magic).await.is_err() {
        return;
    }
    loop {
        let req = tokio::select! {
            _ = raw.stop.cancelled() => return,
            r = tokio::time::timeout(IDLE, read_frame::<pb::RawGetRequest>(&mut s)) => match r {
                Ok(Ok(req)) => req,
                Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                    let _ = write_frame(&mut s, &refusal(Status::invalid_argument(e.to_string()))).await;
                    return;
                }
                _ => return,
            },
        };
        let span = info_span!("chunk.get", chunk = %req.hash, peer = %raw.core.id, offset = req.offset, bytes = tracing::field::Empty, verify = false, transport = "raw");
        join_trace(&span, &req.headers);
        let open = match raw.open(&req).instrument(span.clone()).await {
            Ok(open) => open,
            Err(status) => {
                if write_frame(&mut s, &refusal(status)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        span.record("bytes", open.len);
        let answer = pb::RawGetAnswer {
            code: 0,
            message: String::new(),
            length: open.len,
        };
        if write_frame(&mut s, &answer).await.is_err() {
            return;
        }
        match raw.send(s, open, span).await {
            Some(back) => s = back,
            None => return,
        }
    }
}

fn refusal(s: Status) -> pb::RawGetAnswer {
    pb::RawGetAnswer {
        code: s.code() as i32,
        message: s.message().to_string(),
        length: 0,
    }
}

/// A range ready to send, holding one of the peer's read slots.
struct Open {
    file: File,
    offset: u64,
    len: u64,
    _slot: ReadSlot,
}

/// A read slot taken with `Active::admit`, owned (it crosses into the blocking thread).
struct ReadSlot(Arc<PeerCore>);

impl Drop for ReadSlot {
    fn drop(&mut self) {
        drop(Active(&self.0.counters.active_reads));
    }
}

impl Raw {
    /// Check a request as `GetChunk` would be checked, and open its range.
    async fn open(&self, req: &pb::RawGetRequest) -> Result<Open, Status> {
        if let Some(role) = crate::policy("/shoal.v1.Peer/GetChunk") {
            let auth = req.headers.get("authorization").map(String::as_str);
            self.tokens.authorize(auth, role)?;
        }
        let h = hash::parse(&req.hash)?;
        let core = &self.core;
        if core.faults.frozen() {
            core.faults.gets_while_frozen.fetch_add(1, Relaxed);
        }
        let slot = Active::admit(&core.counters.active_reads, core.max_reads).map_err(|_| {
            Status::resource_exhausted(format!(
                "peer busy: {} reads in progress; try another replica",
                core.max_reads
            ))
        })?;
        std::mem::forget(slot);
        let slot = ReadSlot(core.clone());
        let store = core.store.clone();
        let (offset, length) = (req.offset, req.length);
        // Opening, and the read-ahead hints, may wait on the disk: not on this thread.
        let (file, end) = tokio::task::spawn_blocking(move || {
            let (mut file, len) = store.open_chunk(&h)?;
            let end = range_end(&h, offset, length, len)?;
            crate::store::read_from(&mut file, offset, end - offset)
                .map_err(|e| Status::internal(format!("reading chunk {h}: {e}")))?;
            Ok::<_, Status>((file, end))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Open {
            file,
            offset,
            len: end - offset,
            _slot: slot,
        })
    }

    /// Send an opened range on a blocking thread; the connection comes back for the
    /// next request unless the send failed (the reader then sees a short answer).
    async fn send(&self, s: TcpStream, open: Open, span: tracing::Span) -> Option<TcpStream> {
        let sock = s.into_std().ok()?;
        sock.set_nonblocking(false).ok()?;
        sock.set_write_timeout(Some(self.core.progress_timeout))
            .ok()?;
        let (core, stop) = (self.core.clone(), self.stop.clone());
        let (sock, sent) = tokio::task::spawn_blocking(move || {
            let _e = span.enter();
            let _active = Active::new(&core.counters.active_transfers);
            let sent = send_range(&sock, &open, &core, &stop);
            match &sent {
                Ok(()) => {
                    core.counters.chunks_served.fetch_add(1, Relaxed);
                    info!("chunk served");
                }
                Err(e) => warn!(error = %e, "chunk read abandoned"),
            }
            (sock, sent)
        })
        .await
        .ok()?;
        sent.ok()?;
        sock.set_nonblocking(true).ok()?;
        TcpStream::from_std(sock).ok()
    }
}

/// `sendfile` the range in steps, holding while the fault injection freezes the peer.
fn send_range(
    sock: &std::net::TcpStream,
    open: &Open,
    core: &PeerCore,
    stop: &CancellationToken,
) -> io::Result<()> {
    let (mut at, end) = (open.offset, open.offset + open.len);
    while at < end {
        core.faults.hold_blocking(|| stop.is_cancelled());
        if stop.is_cancelled() {
            return Err(io::Error::other("the peer is stopping"));
        }
        let step = ((end - at) as usize).min(STEP);
        let n = rustix::fs::sendfile(sock, &open.file, Some(&mut at), step)?;
        if n == 0 {
            // The file is shorter than when it was opened: not a copy to serve.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("chunk ended at byte {at} of {end} while being read"),
            ));
        }
        core.faults.spend(n as u64);
        core.counters.bytes_out.fetch_add(n as u64, Relaxed);
    }
    Ok(())
}
