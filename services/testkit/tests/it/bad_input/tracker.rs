//! Bad input to the tracker: names, sizes, replica counts, upload plans and commits,
//! peer registrations and reports, tokens, and bytes that are not protobuf at all.

use std::time::Duration;

use shoal_proto::v1 as pb;
use tonic::Code;

use super::harness::{
    begin, case, code, Case, Outcome, CHUNK, CLUSTER, READ, UPLOAD_EXPIRY, WRITE,
};
use super::raw;

const INVALID: Outcome = Outcome::Grpc(Code::InvalidArgument);
const NOT_FOUND: Outcome = Outcome::Grpc(Code::NotFound);

fn begin_req(name: &str, size: u64, replicas: u32) -> pb::BeginUploadRequest {
    pb::BeginUploadRequest {
        name: name.into(),
        size,
        replicas,
        overwrite: false,
        ..Default::default()
    }
}

fn digest(index: u32, size: u64) -> pb::ChunkDigest {
    pb::ChunkDigest {
        index,
        hash: blake3::hash(&index.to_le_bytes()).to_hex().to_string(),
        size,
    }
}

fn any_id() -> String {
    blake3::hash(b"no such content").to_hex().to_string()
}

fn peer_ref(id: &str, addr: &str, zone: &str) -> Option<pb::PeerRef> {
    Some(pb::PeerRef {
        id: id.into(),
        addr: addr.into(),
        zone: zone.into(),
    })
}

pub fn cases() -> Vec<Case> {
    vec![
        // ---- names, sizes and replica counts --------------------------------------
        case("BeginUpload: empty name", INVALID, |c| async move {
            code(
                c.tracker(Some(WRITE))
                    .begin_upload(begin_req("", 10, 0))
                    .await,
            )
        }),
        case("BeginUpload: 10 KB name", INVALID, |c| async move {
            let name = "n".repeat(10 << 10);
            code(
                c.tracker(Some(WRITE))
                    .begin_upload(begin_req(&name, 10, 0))
                    .await,
            )
        }),
        case("BeginUpload: NUL in the name", INVALID, |c| async move {
            code(
                c.tracker(Some(WRITE))
                    .begin_upload(begin_req("a\0b", 10, 0))
                    .await,
            )
        }),
        case(
            "BeginUpload: newline in the name",
            INVALID,
            |c| async move {
                code(
                    c.tracker(Some(WRITE))
                        .begin_upload(begin_req("a\nb", 10, 0))
                        .await,
                )
            },
        ),
        case(
            "BeginUpload: size 2^64-1 (a negative size)",
            INVALID,
            |c| async move {
                code(
                    c.tracker(Some(WRITE))
                        .begin_upload(begin_req("huge", u64::MAX, 0))
                        .await,
                )
            },
        ),
        case(
            "BeginUpload: size just over the maximum",
            INVALID,
            |c| async move {
                code(
                    c.tracker(Some(WRITE))
                        .begin_upload(begin_req("huge", (1 << 40) + 1, 0))
                        .await,
                )
            },
        ),
        case("BeginUpload: 1000 replicas", INVALID, |c| async move {
            code(
                c.tracker(Some(WRITE))
                    .begin_upload(begin_req("r", 10, 1000))
                    .await,
            )
        }),
        case(
            "BeginUpload: read token",
            Outcome::Grpc(Code::PermissionDenied),
            |c| async move {
                code(
                    c.tracker(Some(READ))
                        .begin_upload(begin_req("r", 10, 0))
                        .await,
                )
            },
        ),
        case("SetReplicas: 0", INVALID, |c| async move {
            code(
                c.tracker(Some(WRITE))
                    .set_replicas(pb::SetReplicasRequest {
                        name_or_id: "small.txt".into(),
                        replicas: 0,
                    })
                    .await,
            )
        }),
        case("SetReplicas: 1000", INVALID, |c| async move {
            code(
                c.tracker(Some(WRITE))
                    .set_replicas(pb::SetReplicasRequest {
                        name_or_id: "small.txt".into(),
                        replicas: 1000,
                    })
                    .await,
            )
        }),
        case("SetReplicas: unknown file", NOT_FOUND, |c| async move {
            code(
                c.tracker(Some(WRITE))
                    .set_replicas(pb::SetReplicasRequest {
                        name_or_id: "no-such-file".into(),
                        replicas: 2,
                    })
                    .await,
            )
        }),
        case("StatFile: unknown name", NOT_FOUND, |c| async move {
            code(
                c.tracker(Some(READ))
                    .stat_file(pb::StatFileRequest {
                        name_or_id: "no-such-file".into(),
                    })
                    .await,
            )
        }),
        case("StatFile: unknown file id", NOT_FOUND, |c| async move {
            code(
                c.tracker(Some(READ))
                    .stat_file(pb::StatFileRequest {
                        name_or_id: any_id(),
                    })
                    .await,
            )
        }),
        case("StatFile: malformed hex id", NOT_FOUND, |c| async move {
            let id = format!("{}zz", &any_id()[..62]);
            code(
                c.tracker(Some(READ))
                    .stat_file(pb::StatFileRequest { name_or_id: id })
                    .await,
            )
        }),
        case("StatFile: empty name", NOT_FOUND, |c| async move {
            code(
                c.tracker(Some(READ))
                    .stat_file(pb::StatFileRequest {
                        name_or_id: String::new(),
                    })
                    .await,
            )
        }),
        case("StatFile: 10 KB name", NOT_FOUND, |c| async move {
            let name = "n".repeat(10 << 10);
            code(
                c.tracker(Some(READ))
                    .stat_file(pb::StatFileRequest { name_or_id: name })
                    .await,
            )
        }),
        case("DeleteFile: unknown name", NOT_FOUND, |c| async move {
            code(
                c.tracker(Some(WRITE))
                    .delete_file(pb::DeleteFileRequest {
                        name_or_id: "no-such-file".into(),
                    })
                    .await,
            )
        }),
        case(
            "DeleteFile: read token",
            Outcome::Grpc(Code::PermissionDenied),
            |c| async move {
                code(
                    c.tracker(Some(READ))
                        .delete_file(pb::DeleteFileRequest {
                            name_or_id: "small.txt".into(),
                        })
                        .await,
                )
            },
        ),
        case("SearchFiles: 10 KB query", INVALID, |c| async move {
            let query = "q".repeat(10 << 10);
            code(
                c.tracker(Some(READ))
                    .search_files(pb::SearchFilesRequest {
                        query,
                        ..Default::default()
                    })
                    .await,
            )
        }),
        case("ListFiles: 10 KB page token", INVALID, |c| async move {
            code(
                c.tracker(Some(READ))
                    .list_files(pb::ListFilesRequest {
                        page_token: "ab".repeat(5 << 10),
                        page_size: 10,
                    })
                    .await,
            )
        }),
        case("ListFiles: page token not hex", INVALID, |c| async move {
            code(
                c.tracker(Some(READ))
                    .list_files(pb::ListFilesRequest {
                        page_token: "../../etc".into(),
                        page_size: 10,
                    })
                    .await,
            )
        }),
        case(
            "SearchFiles: page token not UTF-8",
            INVALID,
            |c| async move {
                code(
                    c.tracker(Some(READ))
                        .search_files(pb::SearchFilesRequest {
                            query: "a".into(),
                            page_token: "ff00".into(),
                            page_size: u32::MAX,
                        })
                        .await,
                )
            },
        ),
        // ---- upload plans -------------------------------------------------------------
        case("PlaceChunks: unknown upload", NOT_FOUND, |c| async move {
            code(
                c.tracker(Some(WRITE))
                    .place_chunks(pb::PlaceChunksRequest {
                        upload_id: "no-such-upload".into(),
                        file_id: any_id(),
                        chunks: vec![digest(0, 10)],
                    })
                    .await,
            )
        }),
        case("PlaceChunks: malformed file id", INVALID, |c| async move {
            let up = begin(&c, "plan-bad-id", 10).await?;
            code(
                c.tracker(Some(WRITE))
                    .place_chunks(pb::PlaceChunksRequest {
                        upload_id: up,
                        file_id: "not-a-hash".into(),
                        chunks: vec![digest(0, 10)],
                    })
                    .await,
            )
        }),
        case(
            "PlaceChunks: malformed chunk hash",
            INVALID,
            |c| async move {
                let up = begin(&c, "plan-bad-hash", 10).await?;
                let mut d = digest(0, 10);
                d.hash = "g".repeat(64);
                code(
                    c.tracker(Some(WRITE))
                        .place_chunks(pb::PlaceChunksRequest {
                            upload_id: up,
                            file_id: any_id(),
                            chunks: vec![d],
                        })
                        .await,
                )
            },
        ),
        case("PlaceChunks: wrong chunk count", INVALID, |c| async move {
            let up = begin(&c, "plan-count", CHUNK + 10).await?;
            code(
                c.tracker(Some(WRITE))
                    .place_chunks(pb::PlaceChunksRequest {
                        upload_id: up,
                        file_id: any_id(),
                        chunks: vec![digest(0, CHUNK)],
                    })
                    .await,
            )
        }),
        case("PlaceChunks: wrong chunk sizes", INVALID, |c| async move {
            let up = begin(&c, "plan-sizes", CHUNK + 10).await?;
            code(
                c.tracker(Some(WRITE))
                    .place_chunks(pb::PlaceChunksRequest {
                        upload_id: up,
                        file_id: any_id(),
                        chunks: vec![digest(0, 10), digest(1, CHUNK)],
                    })
                    .await,
            )
        }),
        case(
            "PlaceChunks: duplicate chunk indices",
            INVALID,
            |c| async move {
                let up = begin(&c, "plan-dup", CHUNK + 10).await?;
                code(
                    c.tracker(Some(WRITE))
                        .place_chunks(pb::PlaceChunksRequest {
                            upload_id: up,
                            file_id: any_id(),
                            chunks: vec![digest(0, CHUNK), digest(0, CHUNK)],
                        })
                        .await,
                )
            },
        ),
        case("PlaceChunks: index out of range", INVALID, |c| async move {
            let up = begin(&c, "plan-range", CHUNK + 10).await?;
            code(
                c.tracker(Some(WRITE))
                    .place_chunks(pb::PlaceChunksRequest {
                        upload_id: up,
                        file_id: any_id(),
                        chunks: vec![digest(0, CHUNK), digest(7, 10)],
                    })
                    .await,
            )
        }),
        case(
            "PlaceChunks: empty file with a non-empty id",
            INVALID,
            |c| async move {
                let up = begin(&c, "plan-empty", 0).await?;
                code(
                    c.tracker(Some(WRITE))
                        .place_chunks(pb::PlaceChunksRequest {
                            upload_id: up,
                            file_id: any_id(),
                            chunks: vec![],
                        })
                        .await,
                )
            },
        ),
        case(
            "PlaceChunks: an existing name with other content",
            Outcome::Grpc(Code::AlreadyExists),
            |c| async move {
                let up = begin(&c, "small.txt", 10).await?;
                code(
                    c.tracker(Some(WRITE))
                        .place_chunks(pb::PlaceChunksRequest {
                            upload_id: up,
                            file_id: any_id(),
                            chunks: vec![digest(0, 10)],
                        })
                        .await,
                )
            },
        ),
        // ---- commits --------------------------------------------------------------------
        case("CommitUpload: unknown upload", NOT_FOUND, |c| async move {
            code(
                c.tracker(Some(WRITE))
                    .commit_upload(pb::CommitUploadRequest {
                        upload_id: "no-such-upload".into(),
                        stored: vec![],
                        ..Default::default()
                    })
                    .await,
            )
        }),
        case(
            "CommitUpload: before PlaceChunks",
            Outcome::Grpc(Code::FailedPrecondition),
            |c| async move {
                let up = begin(&c, "commit-early", 10).await?;
                code(
                    c.tracker(Some(WRITE))
                        .commit_upload(pb::CommitUploadRequest {
                            upload_id: up,
                            stored: vec![],
                            ..Default::default()
                        })
                        .await,
                )
            },
        ),
        case(
            "CommitUpload: chunks stored nowhere",
            Outcome::Grpc(Code::FailedPrecondition),
            |c| async move {
                let up = placed(&c, "commit-nowhere").await?;
                code(
                    c.tracker(Some(WRITE))
                        .commit_upload(pb::CommitUploadRequest {
                            upload_id: up,
                            stored: vec![],
                            ..Default::default()
                        })
                        .await,
                )
            },
        ),
        case(
            "CommitUpload: claims an unknown peer",
            Outcome::Grpc(Code::FailedPrecondition),
            |c| async move {
                let up = placed(&c, "commit-ghost").await?;
                code(
                    c.tracker(Some(WRITE))
                        .commit_upload(pb::CommitUploadRequest {
                            upload_id: up,
                            stored: vec![pb::ChunkStored {
                                index: 0,
                                peer_ids: vec!["ghost-peer".into()],
                                receipts: vec![],
                            }],
                            ..Default::default()
                        })
                        .await,
                )
            },
        ),
        case(
            "CommitUpload: chunk index out of range",
            INVALID,
            |c| async move {
                let up = placed(&c, "commit-range").await?;
                code(
                    c.tracker(Some(WRITE))
                        .commit_upload(pb::CommitUploadRequest {
                            upload_id: up,
                            stored: vec![pb::ChunkStored {
                                index: 9,
                                peer_ids: vec![],
                                receipts: vec![],
                            }],
                            ..Default::default()
                        })
                        .await,
                )
            },
        ),
        case("CommitUpload: chunk index twice", INVALID, |c| async move {
            let up = placed(&c, "commit-twice").await?;
            let s = pb::ChunkStored {
                index: 0,
                peer_ids: vec![],
                receipts: vec![],
            };
            code(
                c.tracker(Some(WRITE))
                    .commit_upload(pb::CommitUploadRequest {
                        upload_id: up,
                        stored: vec![s.clone(), s],
                        ..Default::default()
                    })
                    .await,
            )
        }),
        case("CommitUpload: expired upload", NOT_FOUND, |c| async move {
            let up = placed(&c, "commit-expired").await?;
            // The manager drops it within a round of the expiry.
            tokio::time::sleep(UPLOAD_EXPIRY + Duration::from_secs(1)).await;
            code(
                c.tracker(Some(WRITE))
                    .commit_upload(pb::CommitUploadRequest {
                        upload_id: up,
                        stored: vec![],
                        ..Default::default()
                    })
                    .await,
            )
        }),
        case(
            "ReplaceTargets: unknown upload",
            NOT_FOUND,
            |c| async move {
                code(
                    c.tracker(Some(WRITE))
                        .replace_targets(pb::ReplaceTargetsRequest {
                            upload_id: "no-such-upload".into(),
                            want: 1,
                            ..Default::default()
                        })
                        .await,
                )
            },
        ),
        case(
            "ReplaceTargets: chunk index out of range",
            INVALID,
            |c| async move {
                let up = placed(&c, "replace-index").await?;
                code(
                    c.tracker(Some(WRITE))
                        .replace_targets(pb::ReplaceTargetsRequest {
                            upload_id: up,
                            index: 7,
                            want: 1,
                            ..Default::default()
                        })
                        .await,
                )
            },
        ),
        case(
            "ReplaceTargets: no copies wanted",
            INVALID,
            |c| async move {
                let up = placed(&c, "replace-want").await?;
                code(
                    c.tracker(Some(WRITE))
                        .replace_targets(pb::ReplaceTargetsRequest {
                            upload_id: up,
                            want: 0,
                            ..Default::default()
                        })
                        .await,
                )
            },
        ),
        case(
            "ReplaceTargets: too many failed peer ids",
            INVALID,
            |c| async move {
                let up = placed(&c, "replace-hints").await?;
                code(
                    c.tracker(Some(WRITE))
                        .replace_targets(pb::ReplaceTargetsRequest {
                            upload_id: up,
                            want: 1,
                            failed_peer_ids: (0..1000).map(|i| format!("p{i}")).collect(),
                            ..Default::default()
                        })
                        .await,
                )
            },
        ),
        case(
            "AbortUpload: unknown upload (idempotent)",
            Outcome::Grpc(Code::Ok),
            |c| async move {
                code(
                    c.tracker(Some(WRITE))
                        .abort_upload(pb::AbortUploadRequest {
                            upload_id: "no-such-upload".into(),
                        })
                        .await,
                )
            },
        ),
        // ---- peers ----------------------------------------------------------------------
        case("RegisterPeer: malformed address", INVALID, |c| async move {
            code(
                c.tracker(Some(CLUSTER))
                    .register_peer(pb::RegisterPeerRequest {
                        peer: peer_ref("bad-addr", "nowhere", "a"),
                        ..Default::default()
                    })
                    .await,
            )
        }),
        case("RegisterPeer: port 0", INVALID, |c| async move {
            code(
                c.tracker(Some(CLUSTER))
                    .register_peer(pb::RegisterPeerRequest {
                        peer: peer_ref("bad-port", "127.0.0.1:0", "a"),
                        ..Default::default()
                    })
                    .await,
            )
        }),
        case("RegisterPeer: malformed zone", INVALID, |c| async move {
            code(
                c.tracker(Some(CLUSTER))
                    .register_peer(pb::RegisterPeerRequest {
                        peer: peer_ref("bad-zone", "127.0.0.1:9", "zone with spaces/and slashes"),
                        ..Default::default()
                    })
                    .await,
            )
        }),
        case("RegisterPeer: empty zone", INVALID, |c| async move {
            code(
                c.tracker(Some(CLUSTER))
                    .register_peer(pb::RegisterPeerRequest {
                        peer: peer_ref("no-zone", "127.0.0.1:9", ""),
                        ..Default::default()
                    })
                    .await,
            )
        }),
        case("RegisterPeer: malformed peer id", INVALID, |c| async move {
            code(
                c.tracker(Some(CLUSTER))
                    .register_peer(pb::RegisterPeerRequest {
                        peer: peer_ref("../../etc", "127.0.0.1:9", "a"),
                        ..Default::default()
                    })
                    .await,
            )
        }),
        case("RegisterPeer: no peer", INVALID, |c| async move {
            code(
                c.tracker(Some(CLUSTER))
                    .register_peer(pb::RegisterPeerRequest::default())
                    .await,
            )
        }),
        case(
            "RegisterPeer: a real peer's id with a malformed chunk hash",
            INVALID,
            |c| async move {
                let me = c.cluster.peer_id(0);
                code(
                    c.tracker(Some(CLUSTER))
                        .register_peer(pb::RegisterPeerRequest {
                            peer: peer_ref(&me, &c.peer_addr(0), "a"),
                            chunks: vec!["xyz".into()],
                            ..Default::default()
                        })
                        .await,
                )
            },
        ),
        case(
            "RegisterPeer: write token",
            Outcome::Grpc(Code::PermissionDenied),
            |c| async move {
                code(
                    c.tracker(Some(WRITE))
                        .register_peer(pb::RegisterPeerRequest {
                            peer: peer_ref("impostor", "127.0.0.1:9", "a"),
                            ..Default::default()
                        })
                        .await,
                )
            },
        ),
        case(
            "Heartbeat: unknown peer",
            Outcome::Grpc(Code::Ok),
            |c| async move {
                let r = c
                    .tracker(Some(CLUSTER))
                    .heartbeat(pb::HeartbeatRequest {
                        peer_id: "no-such-peer".into(),
                        ..Default::default()
                    })
                    .await;
                if let Ok(r) = &r {
                    if r.get_ref().known {
                        return Err("an unknown peer's heartbeat was answered known=true".into());
                    }
                }
                code(r)
            },
        ),
        case("ReportChunks: unknown peer", NOT_FOUND, |c| async move {
            code(
                c.tracker(Some(CLUSTER))
                    .report_chunks(pb::ReportChunksRequest {
                        peer_id: "no-such-peer".into(),
                        full: true,
                        ..Default::default()
                    })
                    .await,
            )
        }),
        case("ReportChunks: malformed hash", INVALID, |c| async move {
            code(
                c.tracker(Some(CLUSTER))
                    .report_chunks(pb::ReportChunksRequest {
                        peer_id: c.cluster.peer_id(0),
                        removed: vec!["not-a-hash".into()],
                        ..Default::default()
                    })
                    .await,
            )
        }),
        case("ReportBadChunk: malformed hash", INVALID, |c| async move {
            code(
                c.tracker(Some(READ))
                    .report_bad_chunk(pb::ReportBadChunkRequest {
                        peer_id: c.cluster.peer_id(0),
                        hash: "0".repeat(63),
                        reason: "test".into(),
                    })
                    .await,
            )
        }),
        case("DrainPeer: unknown peer", NOT_FOUND, |c| async move {
            code(
                c.tracker(Some(WRITE))
                    .drain_peer(pb::DrainPeerRequest {
                        peer_id: "no-such-peer".into(),
                    })
                    .await,
            )
        }),
        // ---- tokens -------------------------------------------------------------------
        case(
            "ListFiles: no token",
            Outcome::Grpc(Code::Unauthenticated),
            |c| async move {
                code(
                    c.tracker(None)
                        .list_files(pb::ListFilesRequest::default())
                        .await,
                )
            },
        ),
        case(
            "ListFiles: wrong token",
            Outcome::Grpc(Code::Unauthenticated),
            |c| async move {
                code(
                    c.tracker(Some("not-the-token-0123456789"))
                        .list_files(pb::ListFilesRequest::default())
                        .await,
                )
            },
        ),
        case(
            "ListFiles: 10 KB token",
            Outcome::Grpc(Code::Unauthenticated),
            |c| async move {
                let t = "t".repeat(10 << 10);
                code(
                    c.tracker(Some(&t))
                        .list_files(pb::ListFilesRequest::default())
                        .await,
                )
            },
        ),
        case(
            "ListFiles: token with one character changed",
            Outcome::Grpc(Code::Unauthenticated),
            |c| async move {
                let mut t = READ.to_string();
                t.pop();
                t.push('X');
                code(
                    c.tracker(Some(&t))
                        .list_files(pb::ListFilesRequest::default())
                        .await,
                )
            },
        ),
        // ---- not protobuf -----------------------------------------------------------------
        case(
            "BeginUpload: bytes that are not protobuf (INTERNAL, as gRPC specifies)",
            Outcome::Grpc(Code::Internal),
            |c| async move {
                raw::unary(
                    &c.cluster.tracker_url(),
                    WRITE,
                    "/shoal.v1.Tracker/BeginUpload",
                    vec![0xff; 64],
                )
                .await
            },
        ),
        case(
            "BeginUpload: invalid UTF-8 in the name (a protobuf decode error)",
            Outcome::Grpc(Code::Internal),
            |c| async move {
                use prost::Message;
                let mut bytes = begin_req("ABCD", 10, 0).encode_to_vec();
                let at = bytes
                    .windows(4)
                    .position(|w| w == b"ABCD")
                    .ok_or("name not in the encoding")?;
                bytes[at..at + 4].copy_from_slice(&[0xff, 0xfe, 0xc0, 0x80]);
                raw::unary(
                    &c.cluster.tracker_url(),
                    WRITE,
                    "/shoal.v1.Tracker/BeginUpload",
                    bytes,
                )
                .await
            },
        ),
        case(
            "ListFiles: unknown method",
            Outcome::Grpc(Code::Unimplemented),
            |c| async move {
                raw::unary(
                    &c.cluster.tracker_url(),
                    CLUSTER,
                    "/shoal.v1.Tracker/NoSuchMethod",
                    vec![],
                )
                .await
            },
        ),
    ]
}

/// An upload of one 10-byte chunk, planned (its chunk placed but never sent).
async fn placed(c: &super::harness::Ctx, name: &str) -> Result<String, String> {
    let up = begin(c, name, 10).await?;
    let data = format!("{name}-0123456789");
    let hash = blake3::hash(&data.as_bytes()[..10]).to_hex().to_string();
    c.tracker(Some(WRITE))
        .place_chunks(pb::PlaceChunksRequest {
            upload_id: up.clone(),
            file_id: hash.clone(),
            chunks: vec![pb::ChunkDigest {
                index: 0,
                hash,
                size: 10,
            }],
        })
        .await
        .map_err(|e| format!("PlaceChunks: {e}"))?;
    Ok(up)
}
