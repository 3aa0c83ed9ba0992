//! gRPC calls with arbitrary bytes as the request message: what a server does with
//! input no generated client would send.

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use super::harness::{code, Answer};

#[derive(Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0u8; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// A unary call to `path` (`/package.Service/Method`) carrying `body` as the message.
pub async fn unary(addr: &str, token: &str, path: &'static str, body: Vec<u8>) -> Answer {
    let ch = shoal_common::grpc::channel_with(addr, Some(token)).map_err(|e| e.to_string())?;
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.map_err(|e| format!("not ready: {e}"))?;
    let r = grpc
        .unary(
            tonic::Request::new(body),
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            RawCodec,
        )
        .await;
    code(r)
}
