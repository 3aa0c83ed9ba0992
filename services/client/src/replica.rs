//! Reading a chunk range from one replica ([`ReplicaRead`]), for downloads and for the
//! webserver's gateway reads, and asking a peer to check its copy.

use bytes::Bytes;
use shoal_common::bytestream::BytesStream;
use shoal_proto::v1 as pb;
use tracing::warn;

use crate::Client;

/// A failed read from one replica: bytes received before the failure, the gRPC code
/// (if the peer answered with one) and a message.
pub(crate) type ReplicaError = (u64, Option<tonic::Code>, String);

/// `Peer.GetChunk`, read with [`BytesStream`]: its `data` pieces straight off HTTP/2.
const GET_CHUNK: &str = "/shoal.v1.Peer/GetChunk";

impl Client {
    /// Ask a peer to re-hash its copy of chunk `c` (a `verify` read of the empty range at
    /// its end): a copy that no longer matches is quarantined and reported to the tracker
    /// by the peer itself, so repair replaces it and the peer's next inventory no longer
    /// lists it. Bounded by the progress deadline; the answer is only logged.
    pub(crate) async fn check_copy(&self, peer: &pb::PeerRef, c: &pb::ChunkReplicas) {
        let req = pb::GetChunkRequest {
            hash: c.hash.clone(),
            offset: c.size,
            length: 0,
            verify: true,
        };
        let check = async {
            let mut client = self.peer(&peer.addr).map_err(|e| e.to_string())?;
            let mut s = client
                .get_chunk(req)
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner();
            while s
                .message()
                .await
                .map_err(|e| e.message().to_string())?
                .is_some()
            {}
            Ok::<_, String>(())
        };
        // A whole deadline per 64 MiB hashed is generous for any disk.
        let within = self.options.progress_timeout * (1 + (c.size >> 26) as u32);
        match tokio::time::timeout(within, check).await {
            Ok(Ok(())) => {
                warn!(chunk = c.index, peer = %peer.id, "peer finds its copy sound; the bytes went bad in transit")
            }
            Ok(Err(e)) => {
                warn!(chunk = c.index, peer = %peer.id, error = %e, "peer checked its copy")
            }
            Err(_) => {
                warn!(chunk = c.index, peer = %peer.id, "peer did not finish checking its copy in {within:?}")
            }
        }
    }

    /// Open `[offset, size)` of chunk `c` on one peer.
    pub(crate) async fn open_replica(
        &self,
        peer: &pb::PeerRef,
        c: &pb::ChunkReplicas,
        offset: u64,
    ) -> std::result::Result<ReplicaRead, ReplicaError> {
        let channel = self
            .peer_channel(&peer.addr)
            .map_err(|e| (0, None, e.to_string()))?;
        let req = pb::GetChunkRequest {
            hash: c.hash.clone(),
            offset,
            length: c.size - offset,
            // Every byte is hashed here; the peer need not hash it too.
            verify: false,
        };
        let progress = self.options.progress_timeout;
        let open = BytesStream::open(
            channel,
            GET_CHUNK,
            &req,
            shoal_common::grpc::MAX_MESSAGE_BYTES,
        );
        let stream = tokio::time::timeout(progress, open)
            .await
            .map_err(|_| {
                (
                    0,
                    Some(tonic::Code::DeadlineExceeded),
                    format!("no answer within {progress:?}"),
                )
            })?
            .map_err(|e| (0, Some(e.code()), e.message().to_string()))?;
        Ok(ReplicaRead {
            stream,
            offset,
            size: c.size,
            got: 0,
            idle: progress,
        })
    }
}

/// A chunk range being read from one replica. `next` yields its messages in order; a
/// stream that stalls for the progress timeout, sends more than the chunk holds, or ends
/// early is an error carrying how many bytes arrived before it.
pub(crate) struct ReplicaRead {
    stream: BytesStream,
    offset: u64,
    size: u64,
    /// Bytes received so far.
    pub got: u64,
    idle: std::time::Duration,
}

impl ReplicaRead {
    pub async fn next(&mut self) -> std::result::Result<Option<Bytes>, ReplicaError> {
        let got = self.got;
        let data = match tokio::time::timeout(self.idle, self.stream.next()).await {
            Err(_) => {
                return Err((
                    got,
                    Some(tonic::Code::DeadlineExceeded),
                    format!("stalled: no bytes for {:?}", self.idle),
                ))
            }
            Ok(Err(e)) => return Err((got, Some(e.code()), e.message().to_string())),
            Ok(Ok(None)) if self.offset + got == self.size => return Ok(None),
            Ok(Ok(None)) => {
                return Err((
                    got,
                    None,
                    format!(
                        "stream ended at {} of {} bytes",
                        self.offset + got,
                        self.size
                    ),
                ))
            }
            Ok(Ok(Some(data))) => data,
        };
        let len = data.len() as u64;
        if self.offset + got + len > self.size {
            return Err((
                got,
                None,
                "peer sent more bytes than the chunk holds".into(),
            ));
        }
        self.got += len;
        Ok(Some(data))
    }
}
