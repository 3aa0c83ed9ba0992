//! The peer's gRPC service with `GetChunk`'s answer written without tonic's encoder.
//! tonic copies every message it sends into an encode buffer; a chunk's bytes are
//! already a buffer of message size (`ChunkReader` lends pooled `O_DIRECT` blocks), so
//! each answer message goes out as two body frames instead: its gRPC prefix with the
//! field's header (a few bytes), then the bytes themselves, which h2 hands to the
//! socket as they are (it chains large DATA payloads rather than copying them).
//! `make bench-profile` of a 1 GiB get: that copy was a fifth of each peer's samples.
//!
//! Everything else about the call is the generated service's: the request goes to the
//! same `Peer::get_chunk` (its checks, read slots, reading task and span), behind the
//! same layers (auth, trace context, metrics, timeouts); every other method goes to
//! the generated server untouched.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::Stream;
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message;
use shoal_proto::v1 as pb;
use shoal_proto::v1::peer_server::{Peer as _, PeerServer, SERVICE_NAME};
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::Status;

use crate::service::PeerService;

const GET_CHUNK: &str = "/shoal.v1.Peer/GetChunk";

/// The most a `GetChunk` request may hold (one hash, three numbers: well under this).
const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// [`PeerServer`] with `GetChunk` answered here.
#[derive(Clone)]
pub struct PeerRoutes {
    inner: PeerServer<PeerService>,
    svc: Arc<PeerService>,
}

impl PeerRoutes {
    pub fn new(inner: PeerServer<PeerService>, svc: PeerService) -> Self {
        Self {
            inner,
            svc: Arc::new(svc),
        }
    }
}

impl NamedService for PeerRoutes {
    const NAME: &'static str = SERVICE_NAME;
}

impl tower::Service<http::Request<Body>> for PeerRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<http::Request<Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() != GET_CHUNK {
            return Box::pin(self.inner.call(req));
        }
        let svc = self.svc.clone();
        Box::pin(async move {
            Ok(match get_chunk(&svc, req).await {
                Ok(resp) => resp,
                // A trailers-only answer, as tonic gives it.
                Err(status) => status.into_http(),
            })
        })
    }
}

async fn get_chunk(
    svc: &PeerService,
    req: http::Request<Body>,
) -> Result<http::Response<Body>, Status> {
    let (parts, body) = req.into_parts();
    let msg = read_request(body).await?;
    let request = tonic::Request::from_parts(
        MetadataMap::from_headers(parts.headers),
        parts.extensions,
        msg,
    );
    let stream = svc.get_chunk(request).await?.into_inner();
    let mut resp = http::Response::new(Body::new(Answer {
        stream,
        next: None,
        done: false,
    }));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    Ok(resp)
}

/// The one request message, from a body of at most [`MAX_REQUEST_BYTES`].
async fn read_request(mut body: Body) -> Result<pb::GetChunkRequest, Status> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > MAX_REQUEST_BYTES {
                return Err(Status::out_of_range(format!(
                    "a GetChunk request is at most {MAX_REQUEST_BYTES} bytes"
                )));
            }
            buf.put(data);
        }
    }
    decode_request(&buf)
}

fn decode_request(buf: &[u8]) -> Result<pb::GetChunkRequest, Status> {
    let Some((prefix, msg)) = buf.split_first_chunk::<5>() else {
        return Err(Status::internal("missing request message"));
    };
    if prefix[0] != 0 {
        return Err(Status::unimplemented(
            "compressed requests are not accepted",
        ));
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if len != msg.len() {
        return Err(Status::invalid_argument(
            "a GetChunk request is exactly one whole message",
        ));
    }
    pb::GetChunkRequest::decode(msg)
        .map_err(|e| Status::invalid_argument(format!("malformed GetChunk request: {e}")))
}

/// The gRPC prefix and protobuf header of a `ChunkData` holding `len` bytes.
fn message_head(len: usize) -> Bytes {
    let mut head = BytesMut::with_capacity(16);
    let field = if len == 0 {
        0
    } else {
        1 + prost::encoding::encoded_len_varint(len as u64)
    };
    head.put_u8(0);
    head.put_u32((field + len) as u32);
    if len > 0 {
        head.put_u8(0x0a); // field 1, length-delimited
        prost::encoding::encode_varint(len as u64, &mut head);
    }
    head.freeze()
}

/// The answer's body: each message as its head, then its bytes; the status in trailers.
struct Answer {
    stream: ReceiverStream<Result<pb::ChunkData, Status>>,
    next: Option<Bytes>,
    done: bool,
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if let Some(data) = this.next.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let status = match ready!(Pin::new(&mut this.stream).poll_next(cx)) {
            Some(Ok(m)) => {
                let head = message_head(m.data.len());
                this.next = (!m.data.is_empty()).then_some(m.data);
                return Poll::Ready(Some(Ok(Frame::data(head))));
            }
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        this.done = true;
        let mut trailers = http::HeaderMap::new();
        if status.add_header(&mut trailers).is_err() {
            Status::internal("unencodable status")
                .add_header(&mut trailers)
                .ok();
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message's head and bytes are what prost and tonic would send, for every size
    /// around the varint steps.
    #[test]
    fn message_heads_frame_what_prost_encodes() {
        for len in [0usize, 1, 127, 128, 16_383, 16_384, 262_144, 2_097_152] {
            let data = Bytes::from(vec![7u8; len]);
            let want = pb::ChunkData { data: data.clone() }.encode_to_vec();
            let mut got = message_head(len).to_vec();
            got.extend_from_slice(&data);
            assert_eq!(&got[..1], &[0]);
            assert_eq!(
                u32::from_be_bytes(got[1..5].try_into().unwrap()) as usize,
                want.len(),
                "{len}"
            );
            assert!(got[5..] == want[..], "{len}");
        }
    }

    /// Requests: one whole message, uncompressed, decodable; anything else a status.
    #[test]
    fn requests_are_one_whole_uncompressed_message() {
        let req = pb::GetChunkRequest {
            hash: "ab".repeat(32),
            offset: 5,
            length: 10,
            verify: true,
        };
        let body = req.encode_to_vec();
        let mut wire = vec![0];
        wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
        wire.extend_from_slice(&body);
        assert_eq!(decode_request(&wire).unwrap(), req);
        let code = |w: &[u8]| decode_request(w).unwrap_err().code();
        assert_eq!(code(&wire[..3]), tonic::Code::Internal);
        assert_eq!(code(&wire[..wire.len() - 1]), tonic::Code::InvalidArgument);
        let mut two = wire.clone();
        two.extend_from_slice(&wire);
        assert_eq!(code(&two), tonic::Code::InvalidArgument);
        let mut compressed = wire.clone();
        compressed[0] = 1;
        assert_eq!(code(&compressed), tonic::Code::Unimplemented);
        let mut junk = vec![0, 0, 0, 0, 3];
        junk.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert_eq!(code(&junk), tonic::Code::InvalidArgument);
    }
}
