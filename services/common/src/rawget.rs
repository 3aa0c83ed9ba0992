//! The chunk-transfer path beside gRPC: a get whose bytes a peer sends with
//! `sendfile`, page cache to socket, with no copy through its memory and no HTTP/2
//! framing on either side (Dragonfly's peers fetch pieces over a path of their own too).
//!
//! It shares the peer's gRPC port: a connection that opens with [`MAGIC`] is one of
//! these, any other goes to gRPC. Each request and answer is a little-endian `u32`
//! length and a protobuf message (`RawGetRequest`, `RawGetAnswer`); an answer with
//! code 0 is followed by exactly the chunk bytes it announces. A connection carries
//! one request at a time and is kept for the next.
//!
//! What gRPC gives the data path, this one has too: the bearer token, checked against
//! the same role as `GetChunk`; the W3C trace context, so the peer's span joins the
//! client's trace; and the client's BLAKE3 verification of every byte, which never
//! depended on the transport. gRPC stays the fallback: TLS, a peer that does not
//! answer in kind, or `SHOAL_RAW_GETS=false`.

use std::collections::HashMap;
use std::io;

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The first bytes of a raw-get connection (HTTP/2 opens with "PRI *", TLS with 0x16).
pub const MAGIC: &[u8; 8] = b"shoal/g1";
/// Largest request or answer message: a hash, a range, a token and a trace context.
pub const MAX_FRAME: usize = 16 * 1024;

/// Read one length-prefixed message; a length over [`MAX_FRAME`] is refused before
/// anything is allocated for it.
pub async fn read_frame<M: Message + Default>(r: &mut (impl AsyncRead + Unpin)) -> io::Result<M> {
    let len = r.read_u32_le().await? as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("raw-get message of {len} bytes (at most {MAX_FRAME})"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    M::decode(buf.as_slice()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Write one length-prefixed message (one write: no Nagle wait between its parts).
pub async fn write_frame(w: &mut (impl AsyncWrite + Unpin), m: &impl Message) -> io::Result<()> {
    let mut buf = Vec::with_capacity(4 + m.encoded_len());
    buf.extend_from_slice(&(m.encoded_len() as u32).to_le_bytes());
    m.encode(&mut buf)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    w.write_all(&buf).await
}

/// The current span's trace context, and `authorization: Bearer <token>`, as headers.
pub fn headers(token: Option<&str>) -> HashMap<String, String> {
    let mut h = HashMap::new();
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut h));
    if let Some(t) = token {
        h.insert("authorization".into(), format!("Bearer {t}"));
    }
    h
}

/// Make `span` a child of the caller's span named in `headers`.
pub fn join_trace(span: &tracing::Span, headers: &HashMap<String, String>) {
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(headers));
    let _ = span.set_parent(parent);
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1 as pb;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused_unread() {
        let req = pb::RawGetRequest {
            hash: "ab".repeat(32),
            offset: 7,
            length: 9,
            headers: headers(Some("t0k3n")),
        };
        let mut wire = Vec::new();
        write_frame(&mut wire, &req).await.unwrap();
        let back: pb::RawGetRequest = read_frame(&mut wire.as_slice()).await.unwrap();
        assert_eq!(back, req);
        assert_eq!(back.headers["authorization"], "Bearer t0k3n");

        let mut huge = ((MAX_FRAME + 1) as u32).to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        let e = read_frame::<pb::RawGetRequest>(&mut huge.as_slice())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let cut = &wire[..wire.len() - 1];
        assert!(read_frame::<pb::RawGetRequest>(&mut &cut[..])
            .await
            .is_err());
    }

    #[test]
    fn the_magic_is_neither_http2_nor_tls() {
        assert_ne!(&MAGIC[..3], b"PRI");
        assert_ne!(MAGIC[0], 0x16);
    }
}
