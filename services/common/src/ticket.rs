//! Placement tickets: the tracker's capability to write one chunk to one ordered
//! pipeline of peers (HDFS block access tokens). The tracker issues them with
//! `PlaceChunks` and `ReplaceTargets`; a peer accepts a `PutChunk` only with a ticket
//! that names it, for the hash and size written, not expired, and forwards only to
//! peers its tickets name.
//!
//! The MAC is keyed BLAKE3 over an unambiguous (length-prefixed) encoding of every
//! field. The key is `SHOAL_AUTH__TICKET_KEY` when set, else derived from the cluster
//! token (`blake3::derive_key("shoal ticket v1", token)`), else — auth off — from a
//! public constant, so the code path is the same; such tickets prove nothing against
//! a hostile client, but the directory rule (peers dial only addresses the tracker
//! registered) holds either way. A previous key is accepted for verification, so the
//! key can rotate without failing uploads in flight.
//!
//! Store receipts are the other direction: a peer that stored a chunk signs a
//! receipt (peer id, upload id, hash, size) under a key derived from the same cluster
//! key (`RECEIPT_CONTEXT`), so a receipt can never pass for a ticket; the tracker
//! counts a copy at `CommitUpload` only with a receipt that verifies.
//!
//! This module only signs and checks; it never decides placement or dials anyone.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_proto::v1 as pb;

/// Domain separation for keys derived from a token or a configured secret.
const CONTEXT: &str = "shoal ticket v1";
/// The secret keys are derived from when no cluster token and no ticket key are set
/// (auth off): public, so tickets then authorise nothing against a hostile client.
const OPEN_SECRET: &str = "shoal: authentication off, tickets are not secret";
/// Domain separation of the receipt key from the ticket key.
const RECEIPT_CONTEXT: &str = "shoal store receipt v1";
/// Longest pipeline a ticket may name (the peers' pipeline limit).
pub const MAX_PIPELINE: usize = 16;
/// Tickets one PutChunk header may carry (a pipeline completed after failures mixes
/// the original targets with replacements, each with its own ticket).
pub const MAX_TICKETS: usize = 8;

/// The keys a process signs with (`current`) and accepts (`current`, `previous`).
/// No `Debug`: keys never reach a log.
#[derive(Clone)]
pub struct TicketKeys {
    current: [u8; 32],
    previous: Option<[u8; 32]>,
}

/// Why a ticket was refused. Each maps to PERMISSION_DENIED.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    #[error("PutChunk needs a placement ticket from the tracker (PlaceChunks / ReplaceTargets)")]
    Missing,
    #[error("at most {MAX_TICKETS} tickets per chunk")]
    TooMany,
    #[error("placement ticket is not signed by this cluster's tracker (bad MAC)")]
    BadMac,
    #[error("placement ticket expired {0:?} ago")]
    Expired(Duration),
    #[error("placement ticket is for chunk {ticket}, not {wanted}")]
    WrongChunk { ticket: String, wanted: String },
    #[error("placement ticket is for {ticket} bytes, not {wanted}")]
    WrongSize { ticket: u64, wanted: u64 },
    #[error("no placement ticket names peer {0}")]
    NotNamed(String),
    #[error("placement ticket names more than {MAX_PIPELINE} peers")]
    TooLong,
}

impl From<TicketError> for tonic::Status {
    fn from(e: TicketError) -> Self {
        tonic::Status::permission_denied(e.to_string())
    }
}

fn derive(secret: &str) -> [u8; 32] {
    blake3::derive_key(CONTEXT, secret.as_bytes())
}

impl TicketKeys {
    /// Keys from the settings: the ticket key if set, else the cluster token, else
    /// the public constant (auth off). `previous` is an older ticket key still accepted.
    pub fn new(ticket_key: Option<&str>, previous: Option<&str>, cluster: Option<&str>) -> Self {
        let current = derive(ticket_key.or(cluster).unwrap_or(OPEN_SECRET));
        Self {
            current,
            previous: previous.map(derive),
        }
    }

    /// Keys derived from a cluster token alone (what tests and tools holding the
    /// token use to mint tickets).
    pub fn from_token(cluster: &str) -> Self {
        Self::new(None, None, Some(cluster))
    }

    /// Whether the keys are the public ones of an open cluster.
    pub fn is_open(&self) -> bool {
        self.current == derive(OPEN_SECRET)
    }

    /// Issue a ticket for `hash` (`size` bytes) down `pipeline`, valid for `ttl`.
    pub fn issue(
        &self,
        upload_id: &str,
        hash: &str,
        size: u64,
        pipeline: Vec<String>,
        ttl: Duration,
    ) -> pb::PlacementTicket {
        let expires = now_ms().saturating_add(ttl.as_millis() as u64);
        self.sign(pb::PlacementTicket {
            upload_id: upload_id.to_string(),
            hash: hash.to_string(),
            size,
            pipeline,
            expires_unix_ms: expires,
            mac: Default::default(),
        })
    }

    /// Set `t.mac` from its other fields with the current key.
    pub fn sign(&self, mut t: pb::PlacementTicket) -> pb::PlacementTicket {
        t.mac = mac(&self.current, &t).to_vec().into();
        t
    }

    /// Check the MAC (current key, then previous) and the expiry.
    pub fn verify(&self, t: &pb::PlacementTicket) -> Result<(), TicketError> {
        if t.pipeline.len() > MAX_PIPELINE {
            return Err(TicketError::TooLong);
        }
        let ok = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .any(|k| blake3::Hash::from(mac(k, t)) == t.mac[..]);
        if !ok {
            return Err(TicketError::BadMac);
        }
        let now = now_ms();
        if t.expires_unix_ms <= now {
            return Err(TicketError::Expired(Duration::from_millis(
                now - t.expires_unix_ms,
            )));
        }
        Ok(())
    }

    /// Check the tickets of one PutChunk on peer `me`, receiving `hash` (`size` bytes)
    /// and forwarding to `forward`: every ticket verifies and is for this chunk, one
    /// names `me`, and every forward hop is named by one.
    pub fn check_put(
        &self,
        tickets: &[pb::PlacementTicket],
        me: &str,
        hash: &str,
        size: u64,
        forward: &[&str],
    ) -> Result<(), TicketError> {
        if tickets.is_empty() {
            return Err(TicketError::Missing);
        }
        if tickets.len() > MAX_TICKETS {
            return Err(TicketError::TooMany);
        }
        for t in tickets {
            self.verify(t)?;
            if !t.hash.eq_ignore_ascii_case(hash) {
                return Err(TicketError::WrongChunk {
                    ticket: t.hash.chars().take(64).collect(),
                    wanted: hash.to_string(),
                });
            }
            if t.size != size {
                return Err(TicketError::WrongSize {
                    ticket: t.size,
                    wanted: size,
                });
            }
        }
        let named = |id: &str| tickets.iter().any(|t| t.pipeline.iter().any(|p| p == id));
        if !named(me) {
            return Err(TicketError::NotNamed(me.to_string()));
        }
        if let Some(hop) = forward.iter().find(|id| !named(id)) {
            return Err(TicketError::NotNamed(hop.chars().take(64).collect()));
        }
        Ok(())
    }
}

impl TicketKeys {
    /// The receipt a peer `peer_id` signs once it holds `hash` (`size` bytes) durable
    /// for `upload_id`, its write sequence then at `mark`.
    pub fn receipt(
        &self,
        peer_id: &str,
        upload_id: &str,
        hash: &str,
        size: u64,
        mark: Option<pb::WriteMark>,
    ) -> pb::StoreReceipt {
        let mut r = pb::StoreReceipt {
            peer_id: peer_id.to_string(),
            upload_id: upload_id.to_string(),
            hash: hash.to_string(),
            size,
            mac: Default::default(),
            mark,
        };
        r.mac = receipt_mac(&receipt_key(&self.current), &r).to_vec().into();
        r
    }

    /// Whether `r` is signed by this cluster (current or previous key) and is for
    /// `upload_id`, `hash` and `size`.
    pub fn check_receipt(
        &self,
        r: &pb::StoreReceipt,
        upload_id: &str,
        hash: &str,
        size: u64,
    ) -> bool {
        r.upload_id == upload_id
            && r.hash.eq_ignore_ascii_case(hash)
            && r.size == size
            && [Some(&self.current), self.previous.as_ref()]
                .into_iter()
                .flatten()
                .any(|k| blake3::Hash::from(receipt_mac(&receipt_key(k), r)) == r.mac[..])
    }

    /// The upload id of the ticket naming `me` (what the receipt is for), if any.
    pub fn upload_for<'a>(tickets: &'a [pb::PlacementTicket], me: &str) -> Option<&'a str> {
        tickets
            .iter()
            .find(|t| t.pipeline.iter().any(|p| p == me))
            .map(|t| t.upload_id.as_str())
    }
}

fn receipt_key(k: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key(RECEIPT_CONTEXT, k)
}

/// Keyed BLAKE3 over every field of a receipt but the MAC, length-prefixed (the mark
/// only when present: an older peer's receipts, which have none, still verify).
fn receipt_mac(key: &[u8; 32], r: &pb::StoreReceipt) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    let mut field = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(r.peer_id.as_bytes());
    field(r.upload_id.as_bytes());
    field(r.hash.to_ascii_lowercase().as_bytes());
    field(&r.size.to_le_bytes());
    if let Some(m) = &r.mark {
        field(&m.boot.to_le_bytes());
        field(&m.seq.to_le_bytes());
    }
    *h.finalize().as_bytes()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Keyed BLAKE3 over every field but the MAC, each length-prefixed so no two tickets
/// encode the same.
fn mac(key: &[u8; 32], t: &pb::PlacementTicket) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    let mut field = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(t.upload_id.as_bytes());
    field(t.hash.as_bytes());
    field(&t.size.to_le_bytes());
    field(&(t.pipeline.len() as u64).to_le_bytes());
    for p in &t.pipeline {
        field(p.as_bytes());
    }
    field(&t.expires_unix_ms.to_le_bytes());
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "ab";
    fn keys() -> TicketKeys {
        TicketKeys::from_token("cluster-token-0123456789")
    }
    fn ticket(k: &TicketKeys) -> pb::PlacementTicket {
        k.issue(
            "u1",
            H,
            100,
            vec!["p1".into(), "p2".into()],
            Duration::from_secs(60),
        )
    }

    #[test]
    fn a_ticket_verifies_and_names_its_pipeline() {
        let k = keys();
        let t = ticket(&k);
        assert_eq!(
            k.check_put(std::slice::from_ref(&t), "p1", H, 100, &["p2"]),
            Ok(())
        );
        assert_eq!(
            k.check_put(std::slice::from_ref(&t), "p2", H, 100, &[]),
            Ok(())
        );
        assert_eq!(
            k.check_put(std::slice::from_ref(&t), "p3", H, 100, &[]),
            Err(TicketError::NotNamed("p3".into()))
        );
        assert_eq!(
            k.check_put(&[t], "p1", H, 100, &["evil"]),
            Err(TicketError::NotNamed("evil".into()))
        );
        assert_eq!(
            k.check_put(&[], "p1", H, 100, &[]),
            Err(TicketError::Missing)
        );
    }

    #[test]
    fn any_changed_field_breaks_the_mac() {
        let k = keys();
        let t = ticket(&k);
        let mut flipped = t.clone();
        let mut m = flipped.mac.to_vec();
        m[0] ^= 1;
        flipped.mac = m.into();
        assert_eq!(k.verify(&flipped), Err(TicketError::BadMac));
        let mut longer = t.clone();
        longer.pipeline.push("p3".into());
        assert_eq!(k.verify(&longer), Err(TicketError::BadMac));
        let mut later = t.clone();
        later.expires_unix_ms += 1;
        assert_eq!(k.verify(&later), Err(TicketError::BadMac));
        let mut other = t.clone();
        other.upload_id = "u2".into();
        assert_eq!(k.verify(&other), Err(TicketError::BadMac));
        // Length prefixes: moving a byte between fields changes the MAC.
        let mut moved = t;
        moved.pipeline = vec!["p1p".into(), "2".into()];
        assert_eq!(k.verify(&moved), Err(TicketError::BadMac));
    }

    #[test]
    fn hash_size_and_expiry_are_checked() {
        let k = keys();
        let t = ticket(&k);
        assert!(matches!(
            k.check_put(std::slice::from_ref(&t), "p1", "cd", 100, &[]),
            Err(TicketError::WrongChunk { .. })
        ));
        assert!(matches!(
            k.check_put(&[t], "p1", H, 99, &[]),
            Err(TicketError::WrongSize { .. })
        ));
        let mut old = ticket(&k);
        old.expires_unix_ms = now_ms() - 1000;
        let old = k.sign(old);
        assert!(matches!(k.verify(&old), Err(TicketError::Expired(_))));
    }

    #[test]
    fn receipts_verify_bind_every_field_and_rotate() {
        let k = keys();
        let r = k.receipt("p1", "u1", H, 100, None);
        assert!(k.check_receipt(&r, "u1", H, 100));
        assert!(!k.check_receipt(&r, "u2", H, 100), "another upload");
        assert!(!k.check_receipt(&r, "u1", "cd", 100), "another chunk");
        assert!(!k.check_receipt(&r, "u1", H, 99), "another size");
        let mut moved = r.clone();
        moved.peer_id = "p2".into();
        assert!(!k.check_receipt(&moved, "u1", H, 100), "another peer");
        assert!(!TicketKeys::from_token("other").check_receipt(&r, "u1", H, 100));
        // A ticket MAC is no receipt MAC.
        let t = ticket(&k);
        let forged = pb::StoreReceipt {
            mac: t.mac,
            ..r.clone()
        };
        assert!(!k.check_receipt(&forged, "u1", H, 100));
        // The mark is signed too: a client cannot move it, add it or take it away.
        let mark = |seq| Some(pb::WriteMark { boot: 7, seq });
        let marked = k.receipt("p1", "u1", H, 100, mark(10));
        assert!(k.check_receipt(&marked, "u1", H, 100));
        for m in [mark(11), None] {
            let moved = pb::StoreReceipt {
                mark: m,
                ..marked.clone()
            };
            assert!(!k.check_receipt(&moved, "u1", H, 100), "mark {m:?}");
        }
        let added = pb::StoreReceipt {
            mark: mark(10),
            ..r.clone()
        };
        assert!(!k.check_receipt(&added, "u1", H, 100), "a mark added");
        let rotated = TicketKeys::new(
            Some("new-ticket-key-0123456789"),
            Some("cluster-token-0123456789"),
            None,
        );
        let old = TicketKeys::new(Some("cluster-token-0123456789"), None, None);
        assert!(rotated.check_receipt(&old.receipt("p1", "u1", H, 100, None), "u1", H, 100));
    }

    #[test]
    fn keys_rotate_and_stay_apart() {
        let old = TicketKeys::new(Some("old-ticket-key-0123456789"), None, Some("c"));
        let new = TicketKeys::new(
            Some("new-ticket-key-0123456789"),
            Some("old-ticket-key-0123456789"),
            Some("c"),
        );
        let t = ticket(&old);
        assert_eq!(new.verify(&t), Ok(()), "the previous key is still accepted");
        assert_eq!(old.verify(&ticket(&new)), Err(TicketError::BadMac));
        // Another cluster's token, or the open key, does not verify.
        assert_eq!(
            TicketKeys::from_token("other").verify(&ticket(&keys())),
            Err(TicketError::BadMac)
        );
        let open = TicketKeys::new(None, None, None);
        assert!(open.is_open() && !keys().is_open());
        assert_eq!(open.verify(&ticket(&keys())), Err(TicketError::BadMac));
    }
}
