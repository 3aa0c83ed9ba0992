//! A `PutChunk` stream as a peer receives it: protobuf messages decoded with prost,
//! then fed to the chunk store the way `PeerService::put_chunk` does (header first,
//! data only after it, never more bytes than declared, verify on commit).
//!
//! Invariants: nothing panics; a commit that succeeds stored exactly the declared
//! number of bytes and their BLAKE3 is the header's hash; a failed stream leaves the
//! chunk absent and no temp file behind.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use shoal_common::hash::Hash;
use shoal_peer::service::MAX_CHUNK_BYTES;
use shoal_peer::store::ChunkStore;
use shoal_proto::v1 as pb;
use shoal_proto::v1::put_chunk_request::Msg;

/// Small, so "no space" is reachable; big enough for any input libFuzzer makes.
const CAPACITY: u64 = 1 << 20;

#[derive(Arbitrary, Debug)]
enum HashChoice {
    /// The BLAKE3 of the data messages that follow (what an honest sender sends).
    OfData,
    /// The right hash with one bit flipped.
    Flipped(u8),
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum SizeChoice {
    OfData,
    /// Off by a little either way (truncated or too long).
    Near(i8),
    Any(u64),
}

#[derive(Arbitrary, Debug)]
enum Wire {
    /// Bytes off the wire, decoded as a `PutChunkRequest`.
    Raw(Vec<u8>),
    Header(HashChoice, SizeChoice),
    Data(Vec<u8>),
    Empty,
}

fn store() -> &'static (tempfile::TempDir, ChunkStore) {
    static S: OnceLock<(tempfile::TempDir, ChunkStore)> = OnceLock::new();
    S.get_or_init(|| {
        // tmpfs when there is one: commits fsync, and a fuzzer commits a lot.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("temp dir");
        let s = ChunkStore::open(dir.path(), CAPACITY).expect("open store");
        (dir, s)
    })
}

/// Turn the structured input into the messages a sender would put on the wire.
fn messages(wire: Vec<Wire>) -> Vec<Option<pb::PutChunkRequest>> {
    let data: Vec<u8> = wire
        .iter()
        .filter_map(|w| match w {
            Wire::Data(d) => Some(d.as_slice()),
            _ => None,
        })
        .flatten()
        .copied()
        .collect();
    let honest = Hash::of(&data);
    wire.into_iter()
        .map(|w| {
            let msg = match w {
                Wire::Raw(bytes) => return pb::PutChunkRequest::decode(bytes.as_slice()).ok(),
                Wire::Empty => None,
                Wire::Data(d) => Some(Msg::Data(d.into())),
                Wire::Header(h, s) => {
                    let hash = match h {
                        HashChoice::OfData => honest.to_hex(),
                        HashChoice::Flipped(bit) => {
                            let mut b = honest.0;
                            b[(bit as usize / 8) % 32] ^= 1 << (bit % 8);
                            Hash(b).to_hex()
                        }
                        HashChoice::Text(t) => t,
                    };
                    let size = match s {
                        SizeChoice::OfData => data.len() as u64,
                        SizeChoice::Near(d) => (data.len() as u64).saturating_add_signed(d as i64),
                        SizeChoice::Any(n) => n,
                    };
                    Some(Msg::Header(pb::PutChunkHeader {
                        hash,
                        size,
                        forward: vec![],
                        tickets: vec![],
                    }))
                }
            };
            // Through the encoder and back, as tonic would carry it.
            let bytes = pb::PutChunkRequest { msg }.encode_to_vec();
            Some(pb::PutChunkRequest::decode(bytes.as_slice()).expect("own encoding decodes"))
        })
        .collect()
}

/// What the peer does with the stream; `Ok(Some(h))` when chunk `h` was committed.
fn receive(
    s: &ChunkStore,
    msgs: Vec<Option<pb::PutChunkRequest>>,
) -> Result<Option<(Hash, u64)>, String> {
    let mut it = msgs.into_iter();
    // A message that does not decode ends the call with an error, as in tonic.
    let first = it.next().ok_or("empty stream")?.ok_or("undecodable")?;
    let Some(Msg::Header(header)) = first.msg else {
        return Err("PutChunk must start with a header".into());
    };
    let h = shoal_common::hash::parse(&header.hash).map_err(|e| e.message().to_string())?;
    if header.size > MAX_CHUNK_BYTES {
        return Err("too large".into());
    }
    let mut w = s.writer(h, header.size).map_err(|e| e.to_string())?;
    let mut received = 0u64;
    for m in it {
        match m.ok_or("undecodable")?.msg {
            Some(Msg::Data(d)) => {
                received += d.len() as u64;
                if received > header.size {
                    return Err("more than declared".into());
                }
                w.write(&d).map_err(|e| e.to_string())?;
            }
            _ => return Err("one header, then data only".into()),
        }
    }
    w.commit().map_err(|e| e.to_string())?;
    Ok(Some((h, header.size)))
}

fuzz_target!(|wire: Vec<Wire>| {
    let (dir, s) = store();
    let msgs = messages(wire);
    let target = msgs
        .first()
        .and_then(|m| match m.as_ref().and_then(|m| m.msg.as_ref()) {
            Some(Msg::Header(h)) => h.hash.parse::<Hash>().ok(),
            _ => None,
        });
    match receive(s, msgs) {
        Ok(Some((h, size))) => {
            let bytes = std::fs::read(s.path(&h)).expect("a committed chunk is on disk");
            assert_eq!(
                bytes.len() as u64,
                size,
                "stored size differs from declared"
            );
            assert_eq!(Hash::of(&bytes), h, "stored bytes do not hash to the name");
            assert!(s.has(&h));
            assert!(s.delete(&h).expect("delete"));
        }
        Ok(None) => {}
        Err(_) => {
            if let Some(h) = target {
                assert!(!s.has(&h), "a failed stream left chunk {h} stored");
                assert!(
                    !s.path(&h).exists(),
                    "a failed stream left chunk {h} on disk"
                );
            }
        }
    }
    // Whatever happened, no temp file is left and the store is empty again.
    let left = std::fs::read_dir(dir.path().join("tmp"))
        .expect("tmp dir")
        .count();
    assert_eq!(left, 0, "temp files left behind");
    assert!(s.is_empty());
    assert_eq!(s.used(), 0);
});
