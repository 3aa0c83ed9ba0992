//! Peer inventories from the wire: `RegisterPeerRequest` and `ReportChunksRequest`
//! decoded with prost, validated as the tracker's service does (peer id, address,
//! zone, every hash), then applied to the tracker's in-memory state.
//!
//! Registrations and full reports may come in parts (`inventory_id`, `last`).
//!
//! Invariants: nothing panics; the two indexes of where chunks live (per peer and per
//! chunk) always agree, every peer's digest matches its chunks, no chunk is listed with
//! an empty set of holders, and every holder is a registered peer.
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
        /// Non-zero: the first part of an inventory sent in parts.
        inventory_id: u8,
    },
    Report(Vec<u8>),
    /// A report for a peer already registered (ids and hashes are hard to guess).
    ReportKnown {
        peer: u8,
        added: Vec<u8>,
        removed: Vec<u8>,
        corrupt: Vec<u8>,
        full: bool,
        inventory_id: u8,
        last: bool,
    },
}

fn hashes(list: &[String]) -> Option<Vec<Hash>> {
    list.iter().map(|s| s.parse().ok()).collect()
}

fn peer_id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn check(st: &State) {
    if let Err(e) = st.locations.check() {
        panic!("locations disagree: {e}");
    }
    for h in st.locations.chunks() {
        for id in st.locations.holders(h) {
            assert!(
                st.peers.contains_key(id),
                "holder {id} of {h} is not a peer"
            );
        }
    }
}

fn register(st: &mut State, req: pb::RegisterPeerRequest, now: tokio::time::Instant) {
    let Some(peer) = req.peer else { return };
    let valid = peer_id_ok(&peer.id)
        && validate_addr(&peer.addr).is_ok()
        && validate_zone(&peer.zone).is_ok();
    let Some(chunks) = hashes(&req.chunks) else {
        return;
    };
    if !valid {
        return;
    }
    // Refused only for an inventory over the cap, which these inputs cannot reach.
    st.register(
        peer,
        req.capacity_bytes,
        req.used_bytes,
        shoal_tracker::state::Snapshot {
            chunks,
            id: req.inventory_id,
            mark: mark_of(req.write_mark),
        },
        now,
    )
    .expect("a small registration is taken");
}

/// A peer's write mark as the tracker's service reads it (boot 0: none).
fn mark_of(m: Option<pb::WriteMark>) -> Option<(u64, u64)> {
    m.filter(|m| m.boot != 0).map(|m| (m.boot, m.seq))
}

fuzz_target!(|ops: Vec<Op>| {
    let mut st = State::default();
    let now = tokio::time::Instant::now();
    for op in ops {
        match op {
            Op::Register(bytes) => {
                if let Ok(req) = pb::RegisterPeerRequest::decode(bytes.as_slice()) {
                    register(&mut st, req, now);
                }
            }
            Op::RegisterValid {
                id,
                zone,
                chunks,
                inventory_id,
            } => {
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
                    inventory_id: u64::from(inventory_id % 4),
                    write_mark: None,
                };
                let req = pb::RegisterPeerRequest::decode(req.encode_to_vec().as_slice())
                    .expect("own encoding decodes");
                let known = st.peers.len();
                register(&mut st, req, now);
                assert!(
                    st.peers.len() >= known.max(1),
                    "a valid registration is taken"
                );
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
                inventory_id,
                last,
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
                    inventory_id: u64::from(inventory_id % 4),
                    last,
                    write_mark: None,
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
    let part = (req.inventory_id != 0).then_some((req.inventory_id, req.last));
    let mark = mark_of(req.write_mark);
    let r = st.report_chunks(&req.peer_id, added, removed, req.full, part, mark);
    assert_eq!(
        r.is_ok(),
        known,
        "unknown peers are refused, known ones accepted"
    );
}
