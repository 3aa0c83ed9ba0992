//! Where a chunk's bytes come from on the way to a pipeline's head: a file being put
//! (read by a blocking task) or memory (a streaming put's chunk, sliced, not copied).

use std::fs::File;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::stream;
use shoal_common::STREAM_MESSAGE_BYTES;
use shoal_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Where a chunk's bytes come from: a file being put, or memory (a stream's chunk).
#[derive(Clone)]
pub(crate) enum Body<'a> {
    File { path: &'a Path, offset: u64 },
    Memory(Bytes),
}

/// A chunk's PutChunk messages: read from a file by a blocking task, or sliced from memory.
type Messages = futures::future::Either<
    ReceiverStream<pb::PutChunkRequest>,
    stream::Iter<std::vec::IntoIter<pb::PutChunkRequest>>,
>;

impl Body<'_> {
    /// The PutChunk messages of `len` bytes: `header`, then the data in pieces.
    pub(crate) fn messages(&self, len: u64, header: pb::PutChunkHeader) -> Messages {
        match self {
            Body::File { path, offset } => futures::future::Either::Left(chunk_messages(
                path.to_path_buf(),
                *offset,
                len,
                header,
            )),
            Body::Memory(data) => {
                let mut msgs = vec![pb::PutChunkRequest {
                    msg: Some(pb::put_chunk_request::Msg::Header(header)),
                }];
                // Slices of one buffer: no byte is copied here.
                for at in (0..data.len()).step_by(STREAM_MESSAGE_BYTES) {
                    let end = (at + STREAM_MESSAGE_BYTES).min(data.len());
                    msgs.push(pb::PutChunkRequest {
                        msg: Some(pb::put_chunk_request::Msg::Data(data.slice(at..end))),
                    });
                }
                futures::future::Either::Right(stream::iter(msgs))
            }
        }
    }
}

/// Stream bytes `[offset, offset+len)` of `path` as PutChunk data messages after `header`.
fn chunk_messages(
    path: PathBuf,
    offset: u64,
    len: u64,
    header: pb::PutChunkHeader,
) -> ReceiverStream<pb::PutChunkRequest> {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        use std::io::{Seek, SeekFrom};
        if tx
            .blocking_send(pb::PutChunkRequest {
                msg: Some(pb::put_chunk_request::Msg::Header(header)),
            })
            .is_err()
        {
            return;
        }
        let Ok(mut f) = File::open(&path) else { return };
        if f.seek(SeekFrom::Start(offset)).is_err() {
            return;
        }
        let mut left = len;
        while left > 0 {
            let n = left.min(STREAM_MESSAGE_BYTES as u64) as usize;
            // A short read means the file changed under us: the peer's hash check rejects it.
            let data = match shoal_common::read_message(&mut f, n) {
                Ok(buf) if buf.len() == n => Bytes::from(buf),
                _ => return,
            };
            left -= n as u64;
            if tx
                .blocking_send(pb::PutChunkRequest {
                    msg: Some(pb::put_chunk_request::Msg::Data(data)),
                })
                .is_err()
            {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}
