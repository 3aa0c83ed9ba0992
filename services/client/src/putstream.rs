//! A streaming put: the content is read once, as it arrives (an HTTP body, a pipe),
//! never spooled. Each chunk is read into memory, hashed, placed as a window of its
//! own (the tracker's streaming upload) and sent down its pipeline while the next ones
//! are read; the content id (BLAKE3 of everything read) is named at the commit.
//!
//! Memory is bounded by `buffers` chunks: a chunk's buffer is freed once the chunk is
//! durable (or known to be stored already), and no chunk is read while `buffers` of
//! them are read or in flight. Everything else (pipelines, replacement targets,
//! receipts, renewals, the commit rule) is the whole-file put's.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, FuturesUnordered, StreamExt};
use shoal_common::hash::Hash;
use shoal_proto::v1 as pb;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{info_span, Instrument};

use crate::body::Body;
use crate::buf::ChunkBuf;
use crate::failover::Avoid;
use crate::put::Upload;
use crate::renewal::Renewal;
use crate::{Client, ClientError, PutOptions, PutResult, Result};

/// The memory streaming puts may hold in chunk buffers, shared by all of them (one
/// permit per byte). A put waits for room before it reads a chunk; a chunk's room is
/// given back once the chunk is durable.
#[derive(Clone)]
pub struct StreamMemory {
    permits: Arc<Semaphore>,
    total: u64,
}

impl StreamMemory {
    pub fn new(total: u64) -> Self {
        let permits = usize::try_from(total)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(permits)),
            total: permits as u64,
        }
    }

    /// Bytes free now.
    pub fn available(&self) -> u64 {
        self.permits.available_permits() as u64
    }

    async fn reserve(&self, bytes: u64) -> Result<OwnedSemaphorePermit> {
        let n = u32::try_from(bytes)
            .ok()
            .filter(|_| bytes <= self.total)
            .ok_or_else(|| {
                ClientError::Other(format!(
                    "a chunk of {bytes} bytes does not fit in the {} bytes of upload memory",
                    self.total
                ))
            })?;
        self.permits
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| ClientError::Other("upload memory closed".into()))
    }
}

/// What the reader yields: a chunk hashed and numbered (with the memory it holds), or
/// the end of the content.
enum Next {
    Chunk(Bytes, pb::ChunkDigest, OwnedSemaphorePermit),
    End { file_id: String, size: u64 },
}

/// Read `reader` to its end in chunks of `chunk_size`, hashing each chunk and the
/// whole content. A chunk's buffer is sized by what is left of `most` (so a small
/// stream begun with a large bound holds what it has), and reserved in `memory` first.
/// A stream longer than `most` fails.
fn read_hashed<R: AsyncRead + Unpin + Send>(
    reader: R,
    chunk_size: u64,
    most: u64,
    memory: StreamMemory,
) -> impl futures::Stream<Item = Result<Next>> + Send {
    let start = Some((reader, blake3::Hasher::new(), 0u32, 0u64));
    stream::unfold(start, move |state| {
        let memory = memory.clone();
        async move {
            let (mut reader, mut whole, index, size) = state?;
            // One byte past the bound is read to tell a stream that ends there from a longer one.
            let want = chunk_size.min(most.saturating_sub(size).saturating_add(1));
            let permit = match memory.reserve(want).await {
                Ok(p) => p,
                Err(e) => return Some((Err(e), None)),
            };
            let data = match read_chunk(&mut reader, want).await {
                Ok(d) => d,
                Err(e) => return Some((Err(e), None)),
            };
            if size + data.len() as u64 > most {
                return Some((
                    Err(ClientError::Other(format!(
                        "the content is larger than the {most} bytes its upload was begun with"
                    ))),
                    None,
                ));
            }
            if data.is_empty() {
                let file_id = Hash::from(whole.finalize()).to_hex();
                return Some((Ok(Next::End { file_id, size }), None));
            }
            let hashing = data.clone();
            let hashed = tokio::task::spawn_blocking(move || {
                whole.update(&hashing);
                let own = Hash::from(blake3::hash(&hashing));
                (whole, own)
            })
            .await;
            let (whole, own) = match hashed {
                Ok(h) => h,
                Err(e) => {
                    return Some((Err(ClientError::Other(format!("hashing task: {e}"))), None))
                }
            };
            let len = data.len() as u64;
            let digest = pb::ChunkDigest {
                index,
                hash: own.to_hex(),
                size: len,
            };
            let next = Some((reader, whole, index + 1, size + len));
            Some((Ok(Next::Chunk(data, digest, permit)), next))
        }
    })
}

/// Up to `len` bytes of `reader` (fewer only at its end), in one buffer.
async fn read_chunk<R: AsyncRead + Unpin>(reader: &mut R, len: u64) -> Result<Bytes> {
    let len = usize::try_from(len).map_err(|_| ClientError::Other("chunk too large".into()))?;
    if len == 0 {
        return Ok(Bytes::new());
    }
    let mut buf = ChunkBuf::new(len)?;
    while buf.len() < len {
        let n = reader
            .read(buf.spare())
            .await
            .map_err(|e| ClientError::Other(format!("reading the content: {e}")))?;
        if n == 0 {
            break;
        }
        buf.filled(n);
    }
    Ok(buf.freeze())
}

/// A stream stored on the peers, not yet committed: [`Streamed::commit`] makes it a
/// file, [`Streamed::abort`] (or its expiry) lets the tracker forget it.
#[derive(Debug)]
pub struct Streamed {
    upload_id: String,
    name: String,
    pub id: String,
    pub size: u64,
    pub chunk_size: u64,
    pub chunks: u32,
    /// Every chunk was stored already: no byte went to a peer.
    pub nothing_sent: bool,
    stored: Vec<pb::ChunkStored>,
}

impl Streamed {
    pub async fn commit(self, client: &Client) -> Result<PutResult> {
        let req = pb::CommitUploadRequest {
            upload_id: self.upload_id.clone(),
            stored: self.stored,
            file_id: self.id.clone(),
        };
        let committed = client
            .trackers
            .call("put: commit", move |mut c| {
                let req = req.clone();
                async move { c.commit_upload(req).await }
            })
            .await;
        if committed.is_err() {
            client.abort_upload(&self.upload_id).await;
        }
        Ok(PutResult {
            id: self.id,
            name: self.name,
            size: self.size,
            chunk_size: self.chunk_size,
            chunks: self.chunks,
            deduplicated: self.chunks > 0 && self.nothing_sent,
            file: committed?.file,
        })
    }

    pub async fn abort(self, client: &Client) {
        client.abort_upload(&self.upload_id).await;
    }
}

impl Client {
    /// Store everything `reader` yields, to be named `opts.name` at the commit, reading
    /// it once. `most` is the most it may hold (the tracker fragments by it; a longer
    /// stream fails), and its chunk buffers are reserved in `memory`. On an error the
    /// upload is aborted.
    pub async fn put_stream<R: AsyncRead + Unpin + Send>(
        &self,
        reader: R,
        most: u64,
        opts: PutOptions,
        memory: &StreamMemory,
    ) -> Result<Streamed> {
        let name = opts.name.clone();
        let span = info_span!("put", file.name = %name, file.size_at_most = most, streaming = true);
        async {
            let req = pb::BeginUploadRequest {
                name: name.clone(),
                size: most,
                replicas: opts.replicas,
                overwrite: opts.overwrite,
                streaming: true,
            };
            let begin = self
                .trackers
                .call("put: begin upload", move |mut c| {
                    let req = req.clone();
                    async move { c.begin_upload(req).await }
                })
                .await?;
            let result = self.stream_inner(reader, most, &begin, memory).await;
            match result {
                Ok(s) => Ok(Streamed { name, ..s }),
                Err(e) => {
                    self.abort_upload(&begin.upload_id).await;
                    Err(e)
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn stream_inner<R: AsyncRead + Unpin + Send>(
        &self,
        reader: R,
        most: u64,
        begin: &pb::BeginUploadResponse,
        memory: &StreamMemory,
    ) -> Result<Streamed> {
        let chunk_size = begin.chunk_size;
        let in_flight = self.options.put_parallelism.max(1);
        let avoid = Avoid::default();
        let up = Upload {
            id: &begin.upload_id,
            avoid: &avoid,
        };
        let up = &up;
        let chunks = read_hashed(reader, chunk_size, most, memory.clone());
        tokio::pin!(chunks);
        let mut sends = FuturesUnordered::new();
        let mut stored: Vec<pb::ChunkStored> = Vec::new();
        let mut renewal = Renewal::new(begin.expires_in_ms);
        let (mut count, mut sent) = (0u32, 0u32);
        let (file_id, size) = loop {
            tokio::select! {
                done = sends.next(), if !sends.is_empty() => {
                    if let Some(chunk) = done {
                        stored.push(chunk?);
                    }
                }
                _ = renewal.tick() => renewal.renew(self, up.id, &stored).await,
                next = chunks.next(), if sends.len() < in_flight => match next {
                    None => return Err(ClientError::Other("the content stream ended early".into())),
                    Some(Err(e)) => return Err(e),
                    Some(Ok(Next::End { file_id, size })) => break (file_id, size),
                    Some(Ok(Next::Chunk(data, digest, permit))) => {
                        count += 1;
                        let p = self.place_window(up.id, digest).await?;
                        if p.already_stored {
                            continue;
                        }
                        sent += 1;
                        let send = async move {
                            let len = data.len() as u64;
                            let body: Body<'static> = Body::Memory(data);
                            let (peer_ids, receipts) = self.send_chunk(up, &p, &body, len).await?;
                            drop(permit);
                            Ok::<_, ClientError>(pb::ChunkStored {
                                index: p.index,
                                peer_ids,
                                receipts,
                            })
                        };
                        sends.push(send);
                    }
                },
            }
        };
        while let Some(chunk) = sends.next().await {
            stored.push(chunk?);
        }
        Ok(Streamed {
            upload_id: begin.upload_id.clone(),
            name: String::new(),
            id: file_id,
            size,
            chunk_size,
            chunks: count,
            nothing_sent: sent == 0,
            stored,
        })
    }
}

impl Client {
    /// Place one chunk of a streaming upload (a window of its own).
    async fn place_window(
        &self,
        upload_id: &str,
        digest: pb::ChunkDigest,
    ) -> Result<pb::ChunkPlacement> {
        let index = digest.index;
        let req = pb::PlaceChunksRequest {
            upload_id: upload_id.to_string(),
            file_id: String::new(),
            chunks: vec![digest],
        };
        let placed = self
            .trackers
            .call("put: place chunks", move |mut c| {
                let req = req.clone();
                async move { c.place_chunks(req).await }
            })
            .await?;
        placed
            .placements
            .into_iter()
            .find(|p| p.index == index)
            .ok_or_else(|| ClientError::Other(format!("the tracker did not place chunk {index}")))
    }
}
