//! Peer inventories from the wire: `RegisterPeerRequest` and `ReportChunksRequest`
//! decoded with prost, validated as the tracker's service does (peer id, address,
//! zone, every hash), then applied to the tracker's in-memory state.
//!
//! Invariants: nothing panics; the two indexes of where chunks live (per peer and per
//! chunk) always agree, and no chunk is listed with an empty set of holders.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use shoal_common::hash::Hash;
use shoal_proto::v1 as pb;
use shoal_tracker::state::State;
use shoal_tracker::tracker::{validate_addr, validate_zone};

#[derive(Arbitrary, Debug)]
enum Op {
    Register(Vec<u8>),
    /// A registration that passes validation, through the encoder and back.
    RegisterValid {
        id: u8,
        zone: u8,
        chunks: Vec<u8>,
    },
    Report(Vec<u8>),
    /// A report for a peer already registered (ids and hashes are hard to guess).
    ReportKnown {
        peer: u8,
        added: Vec<u8>,
        removed: Vec<u8>,
        corrupt: Vec<u8>,
        full: bool,
    },
}

fn hashes(list: &[String]) -> Option<Vec<Hash>> {
    list.iter().map(|s| s.parse().ok()).collect()
}

fn peer_id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn check(st: &State) {
    for (h, holders) in &st.locations {
        assert!(!holders.is_empty(), "chunk {h} listed with no holder");
        for id in holders {
            let p = st.peers.get(id).expect("holder is a known peer");
            assert!(p.chunks.contains(h), "{id} missing {h} in its own set");
        }
    }
    for p in st.peers.values() {
        for h in &p.chunks {
            assert!(
                st.locations.get(h).is_some_and(|s| s.contains(&p.id)),
                "{} holds {h} but the chunk index disagrees",
                p.id
            );
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut st = State::default();
    let now = tokio::time::Instant::now();
    for op in ops {
        match op {
            Op::Register(bytes) => {
                let Ok(req) = pb::RegisterPeerRequest::decode(bytes.as_slice()) else {
                    continue;
                };
                let Some(peer) = req.peer else { continue };
                let valid = peer_id_ok(&peer.id)
                    && validate_addr(&peer.addr).is_ok()
                    && validate_zone(&peer.zone).is_ok();
                let Some(chunks) = hashes(&req.chunks) else {
                    continue;
                };
                if valid {
                    st.register_peer(peer, req.capacity_bytes, req.used_bytes, chunks, now);
                }
            }
            Op::RegisterValid { id, zone, chunks } => {
                // Few distinct chunks, so peers share them and reports overlap.
                let req = pb::RegisterPeerRequest {
                    peer: Some(pb::PeerRef {
                        id: format!("peer-{}", id % 8),
                        addr: format!("127.0.0.1:{}", 1000 + u16::from(id)),
                        zone: format!("z{}", zone % 3),
                    }),
                    capacity_bytes: 1 << 30,
                    used_bytes: 0,
                    chunks: chunks
                        .iter()
                        .map(|c| Hash::of(&[c % 16]).to_hex())
                        .collect(),
                };
                let req = pb::RegisterPeerRequest::decode(req.encode_to_vec().as_slice())
                    .expect("own encoding decodes");
                let peer = req.peer.expect("set above");
                assert!(peer_id_ok(&peer.id));
                validate_addr(&peer.addr).expect("valid address");
                validate_zone(&peer.zone).expect("valid zone");
                let chunks = hashes(&req.chunks).expect("valid hashes");
                st.register_peer(peer, req.capacity_bytes, req.used_bytes, chunks, now);
            }
            Op::Report(bytes) => {
                if let Ok(req) = pb::ReportChunksRequest::decode(bytes.as_slice()) {
                    report(&mut st, req);
                }
            }
            Op::ReportKnown {
                peer,
                added,
                removed,
                corrupt,
                full,
            } => {
                let hex = |v: Vec<u8>| -> Vec<String> {
                    v.iter().map(|c| Hash::of(&[c % 16]).to_hex()).collect()
                };
                let req = pb::ReportChunksRequest {
                    peer_id: format!("peer-{}", peer % 8),
                    added: hex(added),
                    removed: hex(removed),
                    corrupt: hex(corrupt),
                    full,
                };
                let req = pb::ReportChunksRequest::decode(req.encode_to_vec().as_slice())
                    .expect("own encoding decodes");
                report(&mut st, req);
            }
        }
        check(&st);
    }
});

fn report(st: &mut State, req: pb::ReportChunksRequest) {
    let (Some(added), Some(removed), Some(corrupt)) = (
        hashes(&req.added),
        hashes(&req.removed),
        hashes(&req.corrupt),
    ) else {
        return;
    };
    let mut removed = removed;
    removed.extend(corrupt);
    let known = st.peers.contains_key(&req.peer_id);
    let r = st.report_chunks(&req.peer_id, added, removed, req.full);
    assert_eq!(
        r.is_ok(),
        known,
        "unknown peers are refused, known ones accepted"
    );
}
