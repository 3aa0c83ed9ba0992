//! Streaming reads for gateways (the webserver's downloads): a chunk fetched whole from
//! its replicas and verified before anyone sees a byte of it, and a byte range of a file
//! as a stream of such verified pieces, a few chunks fetched ahead.
//!
//! Nothing here touches the disk; memory is bounded by `ahead` chunks per stream.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::{stream, Stream, StreamExt};
use shoal_common::hash::Hash;
use shoal_proto::v1 as pb;
use tracing::{info_span, warn, Instrument};

use crate::buf::ChunkBuf;
use crate::failover::{peer_failed, pick, Avoid};
use crate::{Client, ClientError, Result};

/// Chunks at least this big are hashed on a blocking thread.
const BLOCKING_HASH_BYTES: usize = 1 << 20;

/// A failed read from one replica: bytes appended before the failure, the gRPC code, why.
use crate::replica::ReplicaError;

impl Client {
    /// Fetch one whole chunk, verified against its BLAKE3 hash. Replicas are tried
    /// starting at `index mod n` so parallel chunks spread over peers; a stream that
    /// fails continues on the next replica from the same offset; a mismatch (or a peer
    /// reporting its copy corrupt) drops the bytes, reports the copy and starts over
    /// on another replica. Peers in `avoid` (failed earlier in the same transfer) are
    /// tried last; peers failing here join it.
    pub(crate) async fn fetch_chunk_bytes(
        &self,
        c: &pb::ChunkReplicas,
        avoid: &Avoid,
    ) -> Result<Bytes> {
        let expected: Hash = c
            .hash
            .parse()
            .map_err(|e| ClientError::Other(format!("tracker sent a bad hash: {e}")))?;
        if c.size == 0 {
            return Ok(Bytes::new());
        }
        let n = c.replicas.len();
        if n == 0 {
            return Err(ClientError::Other(format!(
                "chunk {} has no live replica",
                c.index
            )));
        }
        let size = usize::try_from(c.size)
            .map_err(|_| ClientError::Other(format!("chunk {} is too big for memory", c.index)))?;
        let order: Vec<&pb::PeerRef> = (0..n)
            .map(|k| &c.replicas[(c.index as usize + k) % n])
            .collect();
        let mut buf = ChunkBuf::new(size)?;
        let mut contributors: Vec<&pb::PeerRef> = Vec::new();
        let mut errors = Vec::new();
        let mut tries = vec![0u32; n];
        // n + 1 reads in all: each replica one, and one more after a mismatch.
        for _ in 0..n + 1 {
            let k = pick(&order, &tries, avoid);
            tries[k] += 1;
            let peer = order[k];
            let span = info_span!("chunk.fetch", chunk.index = c.index, chunk.hash = %c.hash, peer = %peer.id, offset = buf.len());
            match self.read_replica(peer, c, &mut buf).instrument(span).await {
                Ok(()) => contributors.push(peer),
                Err((got, code, e)) => {
                    warn!(chunk = c.index, peer = %peer.id, error = %e, offset = buf.len(), "replica failed; continuing on another");
                    errors.push(format!("{}: {e}", peer.id));
                    if peer_failed(code) && avoid.add(&peer.id, &e.to_string()) {
                        warn!(peer = %peer.id, "peer avoided for the rest of this download");
                    }
                    if code == Some(tonic::Code::DataLoss) {
                        self.report_bad(&peer.id, &c.hash, &e).await;
                        buf.clear();
                        contributors.clear();
                        continue;
                    }
                    if got > 0 {
                        contributors.push(peer);
                    }
                    if buf.len() < size {
                        continue;
                    }
                }
            }
            if buf.len() == size {
                let data = std::mem::replace(&mut buf, ChunkBuf::new(size)?).freeze();
                if hash_of(data.clone()).await? == expected {
                    return Ok(data);
                }
                for p in &contributors {
                    self.report_bad(&p.id, &c.hash, "gateway hash mismatch")
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
                contributors.clear();
            }
        }
        Err(ClientError::Other(format!(
            "chunk {} could not be fetched from any replica: {}",
            c.index,
            errors.join("; ")
        )))
    }

    /// Append `[buf.len(), size)` of a chunk from one peer to `buf`.
    async fn read_replica(
        &self,
        peer: &pb::PeerRef,
        c: &pb::ChunkReplicas,
        buf: &mut ChunkBuf,
    ) -> std::result::Result<(), ReplicaError> {
        let mut r = self.open_replica(peer, c, buf.len() as u64).await?;
        while let Some(data) = r.next().await? {
            // The reader refuses bytes past the chunk's size: this always fits.
            if !buf.extend_from_slice(&data) {
                return Err((0, None, "peer sent more bytes than the chunk holds".into()));
            }
        }
        Ok(())
    }

    /// Bytes `range` of a file as a stream of verified pieces, in order. Only the chunks
    /// overlapping the range are fetched, up to `ahead` at once; the stream ends with an
    /// error when a chunk cannot be fetched from any replica.
    pub fn range_stream(
        self: &Arc<Self>,
        detail: &pb::FileDetail,
        range: Range<u64>,
        ahead: usize,
    ) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
        let chunk_size = detail.summary.as_ref().map(|s| s.chunk_size).unwrap_or(0);
        let mut wanted: Vec<(pb::ChunkReplicas, Range<usize>)> = Vec::new();
        if chunk_size > 0 && range.start < range.end {
            for c in &detail.chunks {
                let start = c.index as u64 * chunk_size;
                let end = start + c.size;
                if end <= range.start || start >= range.end {
                    continue;
                }
                // Offsets within the chunk: below its size, so they fit in usize.
                let from = (range.start.max(start) - start) as usize;
                let to = (range.end.min(end) - start) as usize;
                wanted.push((c.clone(), from..to));
            }
            wanted.sort_by_key(|(c, _)| c.index);
        }
        let client = self.clone();
        // Peers that fail or stall are avoided for the rest of this stream.
        let avoid = Arc::new(Avoid::default());
        stream::iter(wanted)
            .map(move |(c, part)| {
                let (client, avoid) = (client.clone(), avoid.clone());
                // A task of its own: a chunk fetched ahead keeps reading while the
                // consumer (a slow HTTP client) is busy, so no peer waits on us past
                // its progress deadline. Dropped with the stream.
                let fetch = tokio::spawn(
                    async move {
                        let data = client.fetch_chunk_bytes(&c, &avoid).await?;
                        Ok::<_, ClientError>(data.slice(part))
                    }
                    .in_current_span(),
                );
                let fetch = AbortOnDrop(fetch);
                async move {
                    fetch
                        .await
                        .map_err(|e| ClientError::Other(format!("chunk fetch task: {e}")))?
                }
            })
            .buffered(ahead.max(1))
    }
}

/// A spawned task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

async fn hash_of(data: Bytes) -> Result<Hash> {
    if data.len() < BLOCKING_HASH_BYTES {
        return Ok(Hash::of(&data));
    }
    tokio::task::spawn_blocking(move || Hash::of(&data))
        .await
        .map_err(|e| ClientError::Other(format!("hashing task: {e}")))
}
