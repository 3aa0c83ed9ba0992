//! A server-streaming gRPC call whose answers each carry one `bytes` field (`ChunkData`),
//! read straight off the HTTP/2 stream. tonic's `Streaming` copies every received frame
//! into a buffer of its own and decodes a message only once it is whole; here the
//! field's bytes are handed out as they arrive, as slices of the HTTP/2 frames
//! themselves (`Bytes`, no copy). `make bench-profile` of a 1 GiB get: that copy was
//! about half of the client's `memmove` samples.
//!
//! Everything tonic checks is checked here too: the answer's `grpc-status` (in the
//! headers of a trailers-only answer or in the trailers), the message length against a
//! cap, no compression (none is offered), a body that ends inside a message or without
//! a status. Fields other than `data` are skipped, as prost would. The request goes
//! through the caller's channel, so its interceptor (token, trace context) applies.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use tonic::{Code, Status};
use tower::ServiceExt;

use crate::grpc::GrpcChannel;

/// The pieces of a `bytes` field 1 in a stream of gRPC messages, fed frame by frame.
#[derive(Debug)]
struct Parser {
    state: State,
    /// Bytes left in the message being read (after its 5-byte prefix).
    left: usize,
    max_message: usize,
    /// The gRPC prefix gathered so far.
    prefix: [u8; 5],
    /// A varint gathered so far: value and bits.
    varint: (u64, u32),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Prefix(usize),
    Key,
    /// The length of a length-delimited field; `true` for `data`.
    Len(bool),
    Data(usize),
    Skip(usize),
    SkipVarint,
}

impl Parser {
    fn new(max_message: usize) -> Self {
        Self {
            state: State::Prefix(0),
            left: 0,
            max_message,
            prefix: [0; 5],
            varint: (0, 0),
        }
    }

    /// Between messages: where a stream may end.
    fn at_boundary(&self) -> bool {
        self.state == State::Prefix(0)
    }

    /// Take one frame; `data` pieces go to `out`.
    fn feed(&mut self, mut frame: Bytes, out: &mut VecDeque<Bytes>) -> Result<(), Status> {
        while !frame.is_empty() {
            match self.state {
                State::Prefix(n) => {
                    let k = (5 - n).min(frame.len());
                    self.prefix[n..n + k].copy_from_slice(&frame[..k]);
                    frame.advance(k);
                    if n + k < 5 {
                        self.state = State::Prefix(n + k);
                        continue;
                    }
                    if self.prefix[0] != 0 {
                        return Err(Status::internal(
                            "compressed message, but no compression was offered",
                        ));
                    }
                    let len = u32::from_be_bytes([
                        self.prefix[1],
                        self.prefix[2],
                        self.prefix[3],
                        self.prefix[4],
                    ]) as usize;
                    if len > self.max_message {
                        return Err(Status::out_of_range(format!(
                            "message of {len} bytes is over the limit of {}",
                            self.max_message
                        )));
                    }
                    self.left = len;
                    self.state = State::Key;
                    self.end_field();
                }
                State::Key | State::Len(_) | State::SkipVarint => {
                    let b = frame.get_u8();
                    self.take(1)?;
                    let (v, shift) = self.varint;
                    if shift >= 64 {
                        return Err(Status::internal("malformed message: varint too long"));
                    }
                    let v = v | u64::from(b & 0x7f) << shift;
                    if b & 0x80 != 0 {
                        if self.left == 0 {
                            return Err(Status::internal(
                                "malformed message: a varint runs past its end",
                            ));
                        }
                        self.varint = (v, shift + 7);
                        continue;
                    }
                    self.varint = (0, 0);
                    self.state = match self.state {
                        State::Key => match (v >> 3, v & 7) {
                            (0, _) => return Err(Status::internal("malformed message: field 0")),
                            (f, 2) => State::Len(f == 1),
                            (_, 0) => State::SkipVarint,
                            (_, 1) => State::Skip(8),
                            (_, 5) => State::Skip(4),
                            (f, w) => {
                                return Err(Status::internal(format!(
                                    "malformed message: field {f} of wire type {w}"
                                )))
                            }
                        },
                        State::Len(data) => {
                            let len = usize::try_from(v).unwrap_or(usize::MAX);
                            if data {
                                State::Data(len)
                            } else {
                                State::Skip(len)
                            }
                        }
                        _ => State::Key,
                    };
                    if let State::Skip(n) | State::Data(n) = self.state {
                        if n > self.left {
                            return Err(Status::internal(
                                "malformed message: a field runs past its end",
                            ));
                        }
                    }
                    self.end_field();
                }
                State::Data(n) | State::Skip(n) => {
                    let k = n.min(frame.len());
                    self.take(k)?;
                    let piece = frame.split_to(k);
                    if matches!(self.state, State::Data(_)) {
                        if k > 0 {
                            out.push_back(piece);
                        }
                        self.state = State::Data(n - k);
                    } else {
                        self.state = State::Skip(n - k);
                    }
                    self.end_field();
                }
            }
        }
        Ok(())
    }

    /// Count `n` bytes of the message read.
    fn take(&mut self, n: usize) -> Result<(), Status> {
        self.left = self
            .left
            .checked_sub(n)
            .ok_or_else(|| Status::internal("malformed message: a field runs past its end"))?;
        Ok(())
    }

    /// After a step: a finished field goes on to the next key, a finished message to
    /// the next prefix.
    fn end_field(&mut self) {
        if matches!(self.state, State::Data(0) | State::Skip(0)) {
            self.state = State::Key;
        }
        if self.state == State::Key && self.left == 0 {
            self.state = State::Prefix(0);
        }
    }
}

/// The answer of a server-streaming call, as the pieces of its messages' `data` field.
pub struct BytesStream {
    body: tonic::body::Body,
    parser: Parser,
    ready: VecDeque<Bytes>,
    done: bool,
}

impl BytesStream {
    /// Call `path` (`/package.Service/Method`) on `channel` with `request`; errors as
    /// tonic gives them (a status the server answered with, or the transport's).
    pub async fn open<M: prost::Message>(
        channel: GrpcChannel,
        path: &'static str,
        request: &M,
        max_message: usize,
    ) -> Result<Self, Status> {
        let len = request.encoded_len();
        let mut buf = BytesMut::with_capacity(5 + len);
        buf.put_u8(0);
        buf.put_u32(u32::try_from(len).map_err(|_| Status::internal("request too large"))?);
        request
            .encode(&mut buf)
            .map_err(|e| Status::internal(e.to_string()))?;
        let req = http::Request::builder()
            .method(http::Method::POST)
            .version(http::Version::HTTP_2)
            .uri(path)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(tonic::body::Body::new(http_body_util::Full::new(
                buf.freeze(),
            )))
            .map_err(|e| Status::internal(e.to_string()))?;
        let resp = channel
            .oneshot(req)
            .await
            .map_err(|e| Status::from_error(e.into()))?;
        if let Some(status) = status_of(resp.headers()) {
            // A trailers-only answer: an error, or an empty stream.
            if status.code() != Code::Ok {
                return Err(status);
            }
            return Ok(Self {
                body: tonic::body::Body::empty(),
                parser: Parser::new(max_message),
                ready: VecDeque::new(),
                done: true,
            });
        }
        if resp.status() != http::StatusCode::OK {
            return Err(Status::unknown(format!(
                "HTTP status {} instead of a gRPC answer",
                resp.status()
            )));
        }
        Ok(Self {
            body: tonic::body::Body::new(resp.into_body()),
            parser: Parser::new(max_message),
            ready: VecDeque::new(),
            done: false,
        })
    }

    /// The next piece of `data` (never empty), `None` once the server ended the stream
    /// with status OK.
    pub async fn next(&mut self) -> Result<Option<Bytes>, Status> {
        loop {
            if let Some(piece) = self.ready.pop_front() {
                return Ok(Some(piece));
            }
            if self.done {
                return Ok(None);
            }
            let frame = match self.body.frame().await {
                Some(f) => f?,
                None => {
                    self.done = true;
                    return Err(Status::unknown("the stream ended without a gRPC status"));
                }
            };
            match frame.into_data() {
                Ok(data) => self.parser.feed(data, &mut self.ready)?,
                Err(frame) => {
                    let Some(trailers) = frame.trailers_ref() else {
                        continue;
                    };
                    self.done = true;
                    let status = status_of(trailers).ok_or_else(|| {
                        Status::unknown("the stream's trailers hold no gRPC status")
                    })?;
                    if status.code() != Code::Ok {
                        return Err(status);
                    }
                    if !self.parser.at_boundary() {
                        return Err(Status::internal("the stream ended inside a message"));
                    }
                }
            }
        }
    }
}

/// The `grpc-status` of `headers`, if any. Status details are dropped first: tonic
/// panics on ones that are not base64, and nothing here reads them.
fn status_of(headers: &http::HeaderMap) -> Option<Status> {
    headers.get(Status::GRPC_STATUS)?;
    let mut h = headers.clone();
    h.remove(Status::GRPC_STATUS_DETAILS);
    Status::from_header_map(&h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use shoal_proto::v1 as pb;

    fn framed(msgs: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            out.push(0);
            out.extend_from_slice(&(m.len() as u32).to_be_bytes());
            out.extend_from_slice(m);
        }
        out
    }

    fn parse_in_pieces(wire: &[u8], piece: usize) -> Result<(Vec<u8>, bool), Status> {
        let mut p = Parser::new(1 << 20);
        let mut out = VecDeque::new();
        for c in wire.chunks(piece.max(1)) {
            p.feed(Bytes::copy_from_slice(c), &mut out)?;
        }
        assert!(out.iter().all(|b| !b.is_empty()), "no empty pieces");
        Ok((out.into_iter().flatten().collect(), p.at_boundary()))
    }

    /// Messages as prost writes them, with unknown fields of every wire type around and
    /// between `data`, empty messages, a long varint length: the same bytes however the
    /// stream is cut into frames.
    #[test]
    fn data_pieces_are_the_fields_bytes_however_frames_cut_them() {
        let a: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let b: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
        let mut odd = Vec::new();
        // field 2 varint, field 3 fixed64, field 4 length-delimited, field 5 fixed32
        odd.extend_from_slice(&[0x10, 0xff, 0xff, 0x01]);
        odd.extend_from_slice(&[0x19, 1, 2, 3, 4, 5, 6, 7, 8]);
        odd.extend_from_slice(&[0x22, 3, 9, 9, 9]);
        odd.extend_from_slice(&[0x2d, 1, 2, 3, 4]);
        odd.extend_from_slice(
            &pb::ChunkData {
                data: b.clone().into(),
            }
            .encode_to_vec(),
        );
        odd.extend_from_slice(&[0x10, 0x05]);
        let wire = framed(&[
            pb::ChunkData {
                data: a.clone().into(),
            }
            .encode_to_vec(),
            Vec::new(),
            odd,
            pb::ChunkData::default().encode_to_vec(),
        ]);
        let want: Vec<u8> = a.iter().chain(&b).copied().collect();
        for piece in [1, 2, 3, 5, 6, 7, 300, 4096, wire.len()] {
            let (got, boundary) = parse_in_pieces(&wire, piece).unwrap();
            assert!(got == want, "cut every {piece} bytes");
            assert!(boundary);
        }
        let (_, boundary) = parse_in_pieces(&wire[..wire.len() - 100], 1000).unwrap();
        assert!(!boundary, "cut inside a message");
    }

    /// Oversized, compressed and malformed messages are errors, never a panic.
    #[test]
    fn bad_messages_are_refused() {
        let mut p = Parser::new(100);
        let mut out = VecDeque::new();
        let err = p
            .feed(Bytes::from(framed(&[vec![0; 101]])), &mut out)
            .unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange, "{err}");
        let mut compressed = framed(&[vec![0x0a, 0]]);
        compressed[0] = 1;
        for bad in [
            compressed,
            framed(&[vec![0x0a, 5, 1, 2]]), // data runs past the message
            framed(&[vec![0x0b]]),          // wire type 3 (group)
            framed(&[vec![0x02, 0]]),       // field 0
            framed(&[vec![0x10, 0x80, 0x80]]), // varint runs past the message
            framed(&[vec![0x19, 1, 2]]),    // fixed64 runs past the message
            framed(&[[0x10].iter().chain(&[0xff; 11]).copied().collect()]), // varint too long
        ] {
            let mut p = Parser::new(100);
            assert!(
                p.feed(Bytes::from(bad.clone()), &mut VecDeque::new())
                    .is_err(),
                "{bad:?}"
            );
        }
    }
}
