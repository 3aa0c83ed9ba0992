//! Proof before counting (issue 15): what a client says is checked before the
//! catalogue believes it. A copy counts at `CommitUpload` only with a store receipt
//! the peer signed (`shoal_common::ticket`), and an upload is bound to content
//! already in the catalogue only when its layout is identical.
//!
//! Pure checks over values: this module owns no state and never locks it, so the
//! tracker's operations call it with what they already hold.

use shoal_common::hash::Hash;
use shoal_common::ticket::TicketKeys;
use shoal_proto::v1 as pb;

use crate::error::{Error, Result};
use crate::state::WriteMark;
use crate::store::FileRecord;

/// Receipts one chunk may carry (a pipeline of at most 16 peers, a few retries).
pub const MAX_RECEIPTS: usize = 64;

/// The peers whose receipts prove they hold chunk `h` (`len` bytes) for `upload_id`.
/// A receipt that does not verify is ignored, not an error: a client passing its
/// peers' answers through cannot make it valid, and the commit then fails, naming
/// how many copies are durable, if too few remain.
pub fn receipted_peers<'a>(
    keys: &TicketKeys,
    upload_id: &str,
    h: &Hash,
    len: u64,
    receipts: &'a [pb::StoreReceipt],
) -> Result<Vec<(&'a str, Option<WriteMark>)>> {
    if receipts.len() > MAX_RECEIPTS {
        return Err(Error::InvalidArgument(format!(
            "at most {MAX_RECEIPTS} receipts per chunk, got {}",
            receipts.len()
        )));
    }
    let hex = h.to_hex();
    let mut out: Vec<(&str, Option<WriteMark>)> = Vec::new();
    for r in receipts {
        if keys.check_receipt(r, upload_id, &hex, len) && !out.iter().any(|(p, _)| *p == r.peer_id)
        {
            out.push((&r.peer_id, crate::service::write_mark(r.mark)));
        }
    }
    Ok(out)
}

/// Whether an upload (`size`, `chunk_size`, `chunks`) may be bound to the catalogue's
/// record for the same content id: only when every part of the layout is identical.
/// Otherwise one of the two is not what its id claims; the record stays and the
/// upload is refused, so a junk record never captures a later upload and a later
/// upload never replaces a record others read.
pub fn same_layout(rec: &FileRecord, size: u64, chunk_size: u64, chunks: &[Hash]) -> Result<()> {
    if rec.size == size && rec.chunk_size == chunk_size && rec.chunks == chunks {
        return Ok(());
    }
    Err(Error::FailedPrecondition(format!(
        "content id {} is already stored with a different layout ({} bytes in {} chunks of {}, \
         here {size} bytes in {} chunks of {chunk_size}); the upload is not bound to it",
        rec.id,
        rec.size,
        rec.chunks.len(),
        rec.chunk_size,
        chunks.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: &[u8]) -> Hash {
        Hash::from(blake3::hash(b))
    }

    #[test]
    fn only_valid_receipts_for_this_upload_and_chunk_count() {
        let k = TicketKeys::from_token("proof-cluster-token-0123456789");
        let c = h(b"chunk");
        let good = k.receipt("p1", "u1", &c.to_hex(), 10, None);
        let dup = good.clone();
        let other_upload = k.receipt("p2", "u2", &c.to_hex(), 10, None);
        let forged = pb::StoreReceipt {
            peer_id: "p3".into(),
            ..good.clone()
        };
        let rs = [good, dup, other_upload, forged];
        assert_eq!(
            receipted_peers(&k, "u1", &c, 10, &rs).unwrap(),
            vec![("p1", None)]
        );
        let mark = Some(pb::WriteMark { boot: 7, seq: 3 });
        let marked = [k.receipt("p1", "u1", &c.to_hex(), 10, mark)];
        assert_eq!(
            receipted_peers(&k, "u1", &c, 10, &marked).unwrap(),
            vec![("p1", Some((7, 3)))],
            "the signed mark comes with the peer"
        );
        assert!(receipted_peers(&k, "u1", &c, 11, &rs).unwrap().is_empty());
        let many = vec![pb::StoreReceipt::default(); MAX_RECEIPTS + 1];
        assert!(receipted_peers(&k, "u1", &c, 10, &many).is_err());
    }

    #[test]
    fn layouts_must_match_exactly() {
        let rec = FileRecord {
            id: h(b"id"),
            size: 10,
            chunk_size: 10,
            chunks: vec![h(b"a")],
            replicas: 2,
            created_ms: 0,
        };
        assert!(same_layout(&rec, 10, 10, &[h(b"a")]).is_ok());
        assert!(same_layout(&rec, 10, 10, &[h(b"b")]).is_err());
        assert!(same_layout(&rec, 11, 10, &[h(b"a")]).is_err());
        assert!(same_layout(&rec, 10, 20, &[h(b"a")]).is_err());
    }
}
