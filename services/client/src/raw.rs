//! The client's side of the raw-get path (`shoal_common::rawget`): a chunk range read
//! from a peer that sends it with `sendfile`, into 256 KiB pieces hashed and written
//! as the gRPC messages were. Connections are kept per peer address for the next
//! range. A peer that does not answer in kind (an older one, or one with raw gets
//! off) is read over gRPC for the rest of this client's life; with TLS the raw path
//! is never used.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use shoal_common::rawget::{self, read_frame, write_frame, MAGIC};
use shoal_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

use crate::get::ReplicaError;

/// Idle connections kept per peer address.
const IDLE_PER_PEER: usize = 16;
/// Bytes handed on at a time: the size of a gRPC chunk message.
const PIECE: usize = shoal_common::STREAM_MESSAGE_BYTES;

/// Raw-get connections, the peers that do not speak it, and how many chunk ranges
/// were opened on each path.
#[derive(Default)]
pub(crate) struct RawConns {
    idle: Mutex<HashMap<String, Vec<TcpStream>>>,
    refused: Mutex<HashSet<String>>,
    pub opened_raw: AtomicU64,
    pub opened_grpc: AtomicU64,
}

/// Why a raw read did not open.
pub(crate) enum NotOpened {
    /// The peer does not speak raw gets: read over gRPC.
    NotRaw(String),
    /// The peer failed as it would have over gRPC.
    Failed(ReplicaError),
}

impl RawConns {
    pub fn refused(&self, addr: &str) -> bool {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(addr)
    }

    pub fn refuse(&self, addr: &str) {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr.to_string());
    }

    fn take(&self, addr: &str) -> Option<TcpStream> {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(addr)?
            .pop()
    }

    fn keep(&self, addr: &str, s: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let v = idle.entry(addr.to_string()).or_default();
        if v.len() < IDLE_PER_PEER {
            v.push(s);
        }
    }

    /// Ask `addr` for `[offset, size)` of chunk `hash`: on a kept connection first (one
    /// the peer closed meanwhile is replaced once), else on a new one.
    pub async fn open(
        self: &Arc<Self>,
        addr: &str,
        hash: &str,
        offset: u64,
        size: u64,
        token: Option<&str>,
        progress: Duration,
    ) -> Result<RawBody, NotOpened> {
        let req = pb::RawGetRequest {
            hash: hash.to_string(),
            offset,
            length: size - offset,
            headers: rawget::headers(token),
        };
        if let Some(s) = self.take(addr) {
            if let Ok(Some(r)) = self.ask(s, addr, &req, size - offset, progress).await {
                return Ok(r);
            }
        }
        let s = match tokio::time::timeout(progress, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(NotOpened::Failed((
                    0,
                    Some(Code::Unavailable),
                    format!("connect {addr}: {e}"),
                )))
            }
            Err(_) => {
                return Err(NotOpened::Failed((
                    0,
                    Some(Code::DeadlineExceeded),
                    format!("connect {addr}: no answer within {progress:?}"),
                )))
            }
        };
        shoal_common::net::tune(&s);
        let mut s = s;
        if let Err(e) = s.write_all(MAGIC).await {
            return Err(NotOpened::NotRaw(e.to_string()));
        }
        match self.ask(s, addr, &req, size - offset, progress).await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(NotOpened::NotRaw("no raw-get answer".into())),
            Err(e) => Err(e),
        }
    }

    /// One request on `s`: `Ok(None)` when the connection gave no answer in kind.
    async fn ask(
        self: &Arc<Self>,
        mut s: TcpStream,
        addr: &str,
        req: &pb::RawGetRequest,
        want: u64,
        progress: Duration,
    ) -> Result<Option<RawBody>, NotOpened> {
        if write_frame(&mut s, req).await.is_err() {
            return Ok(None);
        }
        let answer =
            match tokio::time::timeout(progress, read_frame::<pb::RawGetAnswer>(&mut s)).await {
                Err(_) => {
                    return Err(NotOpened::Failed((
                        0,
                        Some(Code::DeadlineExceeded),
                        format!("no answer within {progress:?}"),
                    )))
                }
                Ok(Err(_)) => return Ok(None),
                Ok(Ok(a)) => a,
            };
        if answer.code != 0 {
            self.keep(addr, s);
            return Err(NotOpened::Failed((
                0,
                Some(Code::from(answer.code)),
                answer.message,
            )));
        }
        if answer.length != want {
            return Err(NotOpened::Failed((
                0,
                None,
                format!("peer announced {} bytes, {want} asked", answer.length),
            )));
        }
        Ok(Some(RawBody {
            conns: self.clone(),
            addr: addr.to_string(),
            conn: Some(s),
            left: want,
            idle: progress,
        }))
    }
}

/// The bytes of one answer, read in pieces. Read to the end, the connection goes back
/// to be kept; dropped before, it closes (its unread bytes are of no use).
pub(crate) struct RawBody {
    conns: Arc<RawConns>,
    addr: String,
    conn: Option<TcpStream>,
    left: u64,
    idle: Duration,
}

impl RawBody {
    /// The next piece, `None` at the end; `got` (bytes before it) goes into errors.
    pub async fn next(&mut self, got: u64) -> Result<Option<Bytes>, ReplicaError> {
        let Some(s) = self.conn.as_mut() else {
            return Ok(None);
        };
        if self.left == 0 {
            if let Some(s) = self.conn.take() {
                self.conns.keep(&self.addr, s);
            }
            return Ok(None);
        }
        let want = self.left.min(PIECE as u64) as usize;
        let mut buf = BytesMut::with_capacity(want);
        while buf.len() < want {
            // Never past this piece: what follows belongs to the next one.
            let room = want - buf.len();
            let mut room = (&mut buf).limit(room);
            let n = match tokio::time::timeout(self.idle, s.read_buf(&mut room)).await {
                Err(_) => {
                    return Err((
                        got,
                        Some(Code::DeadlineExceeded),
                        format!("stalled: no bytes for {:?}", self.idle),
                    ))
                }
                Ok(Err(e)) => return Err((got, Some(Code::Unavailable), e.to_string())),
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                // What arrived before the end still counts: the next replica continues
                // from there.
                if !buf.is_empty() {
                    self.conn = None;
                    self.left = 0;
                    return Ok(Some(buf.freeze()));
                }
                return Err((
                    got,
                    Some(Code::Unavailable),
                    "peer closed the connection".into(),
                ));
            }
        }
        self.left -= want as u64;
        Ok(Some(buf.freeze()))
    }
}
