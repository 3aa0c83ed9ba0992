//! `StatFile` answered from encoded bytes. A 256-chunk file's answer is ~40 KB of
//! protobuf (768 holders with their addresses); a popular file is asked for by every
//! client downloading it. The recent-answer cache ([`crate::statcache`]) keeps each
//! answer encoded, and this service sends those bytes as they are: no clone of
//! thousands of strings and no encoding per request. Every other method goes to the
//! generated service; both sit behind the same auth layer and limits.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{BufMut, Bytes};
use shoal_proto::v1 as pb;
use shoal_proto::v1::tracker_server::TrackerServer;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::service::TrackerService;
use crate::tracker::Tracker;

const STAT_FILE: &str = "/shoal.v1.Tracker/StatFile";

/// The tracker's gRPC service: the generated one, with `StatFile` sent pre-encoded.
#[derive(Clone)]
pub struct TrackerGrpc {
    generated: TrackerServer<TrackerService>,
    tracker: Arc<Tracker>,
}

impl TrackerGrpc {
    pub fn new(tracker: Arc<Tracker>) -> Self {
        let generated = TrackerServer::new(TrackerService {
            tracker: tracker.clone(),
            reports: Default::default(),
        })
        .max_decoding_message_size(shoal_common::grpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(shoal_common::grpc::MAX_MESSAGE_BYTES);
        TrackerGrpc { generated, tracker }
    }
}

impl NamedService for TrackerGrpc {
    const NAME: &'static str = "shoal.v1.Tracker";
}

impl Service<http::Request<tonic::body::Body>> for TrackerGrpc {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(())) // as the generated service: always ready
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != STAT_FILE {
            return self.generated.call(req);
        }
        let stat = StatFile(self.tracker.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(PreEncoded).apply_max_message_size_config(
                Some(shoal_common::grpc::MAX_MESSAGE_BYTES),
                Some(shoal_common::grpc::MAX_MESSAGE_BYTES),
            );
            Ok(grpc.unary(stat, req).await)
        })
    }
}

struct StatFile(Arc<Tracker>);

impl UnaryService<pb::StatFileRequest> for StatFile {
    type Response = Bytes;
    type Future = std::future::Ready<Result<Response<Bytes>, Status>>;

    fn call(&mut self, req: Request<pb::StatFileRequest>) -> Self::Future {
        let name = req.into_inner().name_or_id;
        std::future::ready(
            self.0
                .stat_encoded(&name)
                .map(Response::new)
                .map_err(Status::from),
        )
    }
}

/// Decodes requests with prost; encodes responses that already are protobuf bytes.
#[derive(Clone, Copy, Default)]
struct PreEncoded;

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = pb::StatFileRequest;
    type Encoder = PreEncoded;
    type Decoder = ProstDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncoded
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder
    }
}

impl Encoder for PreEncoded {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

struct ProstDecoder;

impl Decoder for ProstDecoder {
    type Item = pb::StatFileRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        prost::Message::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("bad StatFile request: {e}")))
    }
}
