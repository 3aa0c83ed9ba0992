//! Bad input to a peer: chunk streams that lie about their bytes or break the
//! protocol (each must leave nothing stored), reads outside a chunk, malformed hashes,
//! deletions and copies that are not allowed or cannot work.

use std::time::Duration;

use shoal_proto::v1 as pb;
use shoal_proto::v1::put_chunk_request::Msg;
use tonic::Code;

use super::harness::{case, code, Answer, Case, Ctx, Outcome, CLUSTER, READ, WRITE};

const INVALID: Outcome = Outcome::Grpc(Code::InvalidArgument);

/// A PutChunk header with a valid placement ticket naming both peers (minted with the
/// cluster token, as the tracker would): each case then fails for its own reason.
fn header(c: &Ctx, hash: &str, size: u64) -> pb::PutChunkRequest {
    let ticket = shoal_common::ticket::TicketKeys::from_token(CLUSTER).issue(
        "bad-input",
        hash,
        size,
        vec![c.cluster.peer_id(0), c.cluster.peer_id(1)],
        Duration::from_secs(600),
    );
    pb::PutChunkRequest {
        msg: Some(Msg::Header(pb::PutChunkHeader {
            hash: hash.into(),
            size,
            forward: vec![],
            tickets: vec![ticket],
        })),
    }
}

fn data(b: &[u8]) -> pb::PutChunkRequest {
    pb::PutChunkRequest {
        msg: Some(Msg::Data(b.to_vec().into())),
    }
}

/// Bytes no file of the cluster has: a chunk of them is new everywhere.
fn bytes_for(tag: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut h = blake3::Hasher::new();
    h.update(tag.as_bytes());
    let mut r = h.finalize_xof();
    out.resize(len, 0);
    r.fill(&mut out);
    out
}

fn hash(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

/// Send `msgs` as one PutChunk to peer 0.
async fn put(c: &Ctx, token: &str, msgs: Vec<pb::PutChunkRequest>) -> Answer {
    code(
        c.peer(0, Some(token))
            .put_chunk(tokio_stream::iter(msgs))
            .await,
    )
}

/// Send `msgs`, expect an error, and check chunk `h` was stored nowhere.
async fn put_nothing_stored(c: &Ctx, h: &str, msgs: Vec<pb::PutChunkRequest>) -> Answer {
    let r = put(c, WRITE, msgs).await?;
    c.nothing_stored(h).await?;
    Ok(r)
}

/// A GetChunk, its stream read to the end.
async fn get(c: &Ctx, token: Option<&str>, req: pb::GetChunkRequest) -> Answer {
    let r = async {
        let mut s = c.peer(0, token).get_chunk(req).await?.into_inner();
        while s.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    }
    .await;
    code(r)
}

async fn first_chunk(c: &Ctx) -> String {
    c.chunks("multi.bin").await.remove(0)
}

pub fn cases() -> Vec<Case> {
    vec![
        // ---- PutChunk ---------------------------------------------------------------
        case(
            "PutChunk: declared size larger than the bytes sent (truncated)",
            INVALID,
            |c| async move {
                let b = bytes_for("truncated", 1000);
                let h = hash(&b);
                put_nothing_stored(&c, &h, vec![header(&c, &h, 1000), data(&b[..500])]).await
            },
        ),
        case(
            "PutChunk: bytes do not match the hash",
            Outcome::Grpc(Code::DataLoss),
            |c| async move {
                let b = bytes_for("mismatch", 1000);
                let h = hash(&b);
                let other = bytes_for("mismatch-other", 1000);
                put_nothing_stored(&c, &h, vec![header(&c, &h, 1000), data(&other)]).await
            },
        ),
        case(
            "PutChunk: more bytes than declared",
            INVALID,
            |c| async move {
                let b = bytes_for("too-long", 1000);
                let h = hash(&b[..10]);
                put_nothing_stored(&c, &h, vec![header(&c, &h, 10), data(&b)]).await
            },
        ),
        case(
            "PutChunk: the right bytes, then one more",
            INVALID,
            |c| async move {
                let b = bytes_for("right-then-more", 256 << 10);
                let h = hash(&b);
                let mut msgs = vec![header(&c, &h, 256 << 10)];
                msgs.extend(b.chunks(64 << 10).map(data));
                msgs.push(data(b"!"));
                put_nothing_stored(&c, &h, msgs).await
            },
        ),
        case(
            "PutChunk: data before the header",
            INVALID,
            |c| async move {
                let b = bytes_for("data-first", 100);
                let h = hash(&b);
                put_nothing_stored(&c, &h, vec![data(&b), header(&c, &h, 100)]).await
            },
        ),
        case("PutChunk: two headers", INVALID, |c| async move {
            let b = bytes_for("two-headers", 256 << 10);
            let h = hash(&b);
            let mut msgs = vec![header(&c, &h, 256 << 10)];
            msgs.extend(b.chunks(64 << 10).map(data));
            msgs.push(header(&c, &h, 256 << 10));
            put_nothing_stored(&c, &h, msgs).await
        }),
        case("PutChunk: empty stream", INVALID, |c| async move {
            put(&c, WRITE, vec![]).await
        }),
        case("PutChunk: malformed hash", INVALID, |c| async move {
            put(&c, WRITE, vec![header(&c, "abc", 3), data(b"abc")]).await
        }),
        case("PutChunk: size 2^64-1", INVALID, |c| async move {
            let h = hash(b"x");
            put(&c, WRITE, vec![header(&c, &h, u64::MAX), data(b"x")]).await
        }),
        case(
            "PutChunk: a pipeline of 17 peers",
            INVALID,
            |c| async move {
                let b = bytes_for("long-pipeline", 10);
                let h = hash(&b);
                let mut head = header(&c, &h, 10);
                if let Some(Msg::Header(hd)) = &mut head.msg {
                    hd.forward = (0..17)
                        .map(|i| pb::PeerRef {
                            id: format!("p{i}"),
                            addr: format!("127.0.0.1:{}", 1000 + i),
                            zone: "a".into(),
                        })
                        .collect();
                }
                put_nothing_stored(&c, &h, vec![head, data(&b)]).await
            },
        ),
        case(
            "PutChunk: no placement ticket",
            Outcome::Grpc(Code::PermissionDenied),
            |c| async move {
                let b = bytes_for("no-ticket", 10);
                let h = hash(&b);
                let mut head = header(&c, &h, 10);
                if let Some(Msg::Header(hd)) = &mut head.msg {
                    hd.tickets.clear();
                }
                put_nothing_stored(&c, &h, vec![head, data(&b)]).await
            },
        ),
        case(
            "PutChunk: read token",
            Outcome::Grpc(Code::PermissionDenied),
            |c| async move {
                let b = bytes_for("read-token", 10);
                let h = hash(&b);
                let r = put(&c, READ, vec![header(&c, &h, 10), data(&b)]).await?;
                c.nothing_stored(&h).await?;
                Ok(r)
            },
        ),
        case(
            "PutChunk: the client goes away mid-chunk",
            Outcome::Grpc(Code::Cancelled),
            |c| async move {
                let b = bytes_for("abandoned", 100_000);
                let h = hash(&b);
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                tx.send(header(&c, &h, 100_000))
                    .await
                    .map_err(|e| e.to_string())?;
                tx.send(data(&b[..40_000]))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut peer = c.peer(0, Some(WRITE));
                let call = peer.put_chunk(tokio_stream::wrappers::ReceiverStream::new(rx));
                // Give the peer time to start writing, then drop the call (RST_STREAM).
                let r = tokio::time::timeout(Duration::from_millis(500), call).await;
                if let Ok(done) = r {
                    return Err(format!("the call ended before the client left: {done:?}"));
                }
                drop(tx);
                c.nothing_stored(&h).await?;
                Ok(Outcome::Grpc(Code::Cancelled))
            },
        ),
        // ---- GetChunk -----------------------------------------------------------------
        case(
            "GetChunk: offset beyond the chunk",
            Outcome::Grpc(Code::OutOfRange),
            |c| async move {
                let hash = first_chunk(&c).await;
                get(
                    &c,
                    Some(READ),
                    pb::GetChunkRequest {
                        hash,
                        offset: 70_000,
                        length: 0,
                        verify: false,
                    },
                )
                .await
            },
        ),
        case(
            "GetChunk: length beyond the chunk",
            Outcome::Grpc(Code::OutOfRange),
            |c| async move {
                let hash = first_chunk(&c).await;
                get(
                    &c,
                    Some(READ),
                    pb::GetChunkRequest {
                        hash,
                        offset: 10,
                        length: 65_536,
                        verify: false,
                    },
                )
                .await
            },
        ),
        case(
            "GetChunk: offset + length overflows",
            Outcome::Grpc(Code::OutOfRange),
            |c| async move {
                let hash = first_chunk(&c).await;
                get(
                    &c,
                    Some(READ),
                    pb::GetChunkRequest {
                        hash,
                        offset: 1,
                        length: u64::MAX,
                        verify: false,
                    },
                )
                .await
            },
        ),
        case(
            "GetChunk: unknown chunk",
            Outcome::Grpc(Code::NotFound),
            |c| async move {
                let hash = hash(b"no such chunk");
                get(
                    &c,
                    Some(READ),
                    pb::GetChunkRequest {
                        hash,
                        offset: 0,
                        length: 0,
                        verify: false,
                    },
                )
                .await
            },
        ),
        case("GetChunk: malformed hash", INVALID, |c| async move {
            get(
                &c,
                Some(READ),
                pb::GetChunkRequest {
                    hash: "../../etc/passwd".into(),
                    offset: 0,
                    length: 0,
                    verify: false,
                },
            )
            .await
        }),
        case(
            "GetChunk: no token",
            Outcome::Grpc(Code::Unauthenticated),
            |c| async move {
                let hash = first_chunk(&c).await;
                get(
                    &c,
                    None,
                    pb::GetChunkRequest {
                        hash,
                        offset: 0,
                        length: 0,
                        verify: false,
                    },
                )
                .await
            },
        ),
        // ---- HasChunks / DeleteChunks ---------------------------------------------------------
        case("HasChunks: malformed hash", INVALID, |c| async move {
            let hashes = vec![first_chunk(&c).await, "XYZ".into()];
            code(
                c.peer(0, Some(READ))
                    .has_chunks(pb::HasChunksRequest { hashes })
                    .await,
            )
        }),
        case("HasChunks: 10 KB hash", INVALID, |c| async move {
            let hashes = vec!["a".repeat(10 << 10)];
            code(
                c.peer(0, Some(READ))
                    .has_chunks(pb::HasChunksRequest { hashes })
                    .await,
            )
        }),
        case(
            "DeleteChunks: write token",
            Outcome::Grpc(Code::PermissionDenied),
            |c| async move {
                let h = first_chunk(&c).await;
                let r = c
                    .peer(0, Some(WRITE))
                    .delete_chunks(pb::DeleteChunksRequest {
                        hashes: vec![h.clone()],
                        ..Default::default()
                    })
                    .await;
                if !c.peer_has(0, &h).await? {
                    return Err("a write token deleted a chunk".into());
                }
                code(r)
            },
        ),
        case(
            "DeleteChunks: a real hash beside a malformed one",
            INVALID,
            |c| async move {
                let h = first_chunk(&c).await;
                let r = c
                    .peer(0, Some(CLUSTER))
                    .delete_chunks(pb::DeleteChunksRequest {
                        hashes: vec![h.clone(), "bad".into()],
                        ..Default::default()
                    })
                    .await;
                if !c.peer_has(0, &h).await? {
                    return Err("a rejected request deleted a chunk".into());
                }
                code(r)
            },
        ),
        // ---- VerifyChunk (cluster only) ---------------------------------------------------
        case(
            "VerifyChunk: a write token",
            Outcome::Grpc(Code::PermissionDenied),
            |c| async move {
                code(
                    c.peer(0, Some(WRITE))
                        .verify_chunk(pb::VerifyChunkRequest {
                            hash: hash(b"verify-me"),
                        })
                        .await,
                )
            },
        ),
        case("VerifyChunk: malformed hash", INVALID, |c| async move {
            code(
                c.peer(0, Some(CLUSTER))
                    .verify_chunk(pb::VerifyChunkRequest { hash: "zz".into() })
                    .await,
            )
        }),
        // ---- ReplicateChunk -------------------------------------------------------------
        case("ReplicateChunk: no sources", INVALID, |c| async move {
            code(
                c.peer(0, Some(CLUSTER))
                    .replicate_chunk(pb::ReplicateChunkRequest {
                        hash: hash(b"replicate-nothing"),
                        size: 10,
                        sources: vec![],
                    })
                    .await,
            )
        }),
        case(
            "ReplicateChunk: only itself as source",
            INVALID,
            |c| async move {
                let me = pb::PeerRef {
                    id: c.cluster.peer_id(0),
                    addr: c.peer_addr(0),
                    zone: "a".into(),
                };
                code(
                    c.peer(0, Some(CLUSTER))
                        .replicate_chunk(pb::ReplicateChunkRequest {
                            hash: hash(b"replicate-self"),
                            size: 10,
                            sources: vec![me],
                        })
                        .await,
                )
            },
        ),
        case("ReplicateChunk: malformed hash", INVALID, |c| async move {
            code(
                c.peer(0, Some(CLUSTER))
                    .replicate_chunk(pb::ReplicateChunkRequest {
                        hash: "zz".into(),
                        size: 10,
                        sources: vec![],
                    })
                    .await,
            )
        }),
        case("ReplicateChunk: size 2^64-1", INVALID, |c| async move {
            code(
                c.peer(0, Some(CLUSTER))
                    .replicate_chunk(pb::ReplicateChunkRequest {
                        hash: hash(b"replicate-huge"),
                        size: u64::MAX,
                        sources: vec![],
                    })
                    .await,
            )
        }),
        case(
            "ReplicateChunk: unreachable source",
            Outcome::Grpc(Code::Unavailable),
            |c| async move {
                let h = hash(b"replicate-unreachable");
                let src = pb::PeerRef {
                    id: "gone".into(),
                    addr: "127.0.0.1:1".into(),
                    zone: "a".into(),
                };
                let r = c
                    .peer(0, Some(CLUSTER))
                    .replicate_chunk(pb::ReplicateChunkRequest {
                        hash: h.clone(),
                        size: 10,
                        sources: vec![src],
                    })
                    .await;
                c.nothing_stored(&h).await?;
                code(r)
            },
        ),
        case(
            "ReplicateChunk: declared size smaller than the chunk",
            INVALID,
            |c| async move { replicate_stray(&c, "replicate-short", -1).await },
        ),
        case(
            "ReplicateChunk: declared size larger than the chunk",
            INVALID,
            |c| async move { replicate_stray(&c, "replicate-long", 1).await },
        ),
        case(
            "ReplicateChunk: no token",
            Outcome::Grpc(Code::Unauthenticated),
            |c| async move {
                code(
                    c.peer(0, None)
                        .replicate_chunk(pb::ReplicateChunkRequest {
                            hash: hash(b"replicate-anon"),
                            size: 10,
                            sources: vec![],
                        })
                        .await,
                )
            },
        ),
    ]
}

/// Put a chunk on peer 1 only, ask peer 0 to copy it with a wrong size, check peer 0
/// kept nothing, then remove the stray chunk again.
async fn replicate_stray(c: &Ctx, tag: &str, size_off: i64) -> Answer {
    let b = bytes_for(tag, 3000);
    let h = hash(&b);
    code(
        c.peer(1, Some(WRITE))
            .put_chunk(tokio_stream::iter(vec![header(c, &h, 3000), data(&b)]))
            .await,
    )
    .and_then(|o| match o {
        Outcome::Grpc(Code::Ok) => Ok(()),
        o => Err(format!("setting up the stray chunk: {o}")),
    })?;
    let src = pb::PeerRef {
        id: c.cluster.peer_id(1),
        addr: c.peer_addr(1),
        zone: "b".into(),
    };
    let r = c
        .peer(0, Some(CLUSTER))
        .replicate_chunk(pb::ReplicateChunkRequest {
            hash: h.clone(),
            size: (3000 + size_off) as u64,
            sources: vec![src],
        })
        .await;
    let kept = c.peer_has(0, &h).await?;
    let _ = c
        .peer(1, Some(CLUSTER))
        .delete_chunks(pb::DeleteChunksRequest {
            hashes: vec![h],
            ..Default::default()
        })
        .await;
    if kept {
        return Err("peer 0 kept a chunk copied with the wrong size".into());
    }
    code(r)
}
