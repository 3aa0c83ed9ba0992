//! Streaming uploads: the content arrives as it is sent (an HTTP body the webserver
//! cannot read twice), so its id and exact size are known only at the end. Its chunks
//! are placed window by window, in order, as they are hashed, and CommitUpload names
//! the content id. Everything else is the whole-file path's: the same scoring, tickets,
//! receipts and commit rule.
//!
//! What a window must be: indices continuing from the last window's; every chunk the
//! upload's chunk size but a last, shorter one, after which nothing more comes; no
//! more bytes in all than the size the upload was begun with (its fragmentation was
//! decided on that bound). A stream's earlier windows are charged to the candidates of
//! the next one (bytes and copies per peer), so its chunks spread over equal peers as
//! a whole-file placement spreads them; those charges can outlive the heartbeats that
//! report the same bytes stored, which only spreads one stream's chunks further.

use super::put::{holders, place_file, Placed, UploadShape};
use super::*;

/// Chunks one streaming PlaceChunks may place.
pub const MAX_WINDOW_CHUNKS: usize = 1024;

impl Tracker {
    pub(super) async fn place_window(
        self: &Arc<Self>,
        req: pb::PlaceChunksRequest,
    ) -> Result<pb::PlaceChunksResponse> {
        if !req.file_id.is_empty() {
            return Err(Error::InvalidArgument(
                "a streaming upload names its file_id at CommitUpload, not in PlaceChunks".into(),
            ));
        }
        let digests = req.chunks;
        if digests.is_empty() || digests.len() > MAX_WINDOW_CHUNKS {
            return Err(Error::InvalidArgument(format!(
                "a window holds 1 to {MAX_WINDOW_CHUNKS} chunks, got {}",
                digests.len()
            )));
        }
        let hashes: Vec<Hash> = digests
            .iter()
            .map(|c| bad_hash(&c.hash))
            .collect::<Result<_>>()?;
        let upload_id = req.upload_id;
        let (shape, first, candidates, holders) = {
            let st = self.state();
            let now = Instant::now();
            let (shape, first) = check_window(&st, &upload_id, &digests)?;
            let holders = holders(&st, &hashes, &self.cfg, now);
            let mut candidates = (*self.cached_candidates(&st, now)).clone();
            if let Some(up) = st.uploads.get(&upload_id) {
                for c in &mut candidates {
                    if let Some((bytes, copies)) = up.charged.get(&c.id) {
                        c.free_bytes = c.free_bytes.saturating_sub(*bytes);
                        c.load += copies;
                    }
                }
            }
            (shape, first, candidates, holders)
        };
        let span = info_span!(
            "placement",
            upload.id = %upload_id,
            upload.streaming = true,
            window.first = first,
            chunks = digests.len(),
        );
        let decided = span.in_scope(|| place_file(&shape, first, &hashes, candidates, &holders))?;
        let placements = self.placements(&upload_id, &shape, first, &hashes, &decided);
        // As for a whole file: held before any peer may store one of these chunks.
        self.hold_upload(&upload_id, &hashes, true, self.cfg.upload.expiry)
            .await?;
        let mut st = self.state();
        for (h, d) in hashes.iter().zip(&decided) {
            st.placement_reasons.insert(*h, d.reason.clone());
        }
        let up = st.uploads.get_mut(&upload_id).ok_or_else(|| {
            Error::NotFound(format!("upload {upload_id:?} expired during placement"))
        })?;
        if up.chunks.len() != first {
            return Err(Error::FailedPrecondition(format!(
                "another window of upload {upload_id:?} was placed meanwhile: windows go one at a time"
            )));
        }
        charge(up, &digests, &decided);
        up.chunks.extend(hashes);
        up.size = shape.size;
        Ok(pb::PlaceChunksResponse {
            deduplicated: false,
            placements,
            file: None,
        })
    }
}

/// Remember what a window placed on each peer, for the next window's candidates.
fn charge(up: &mut Upload, digests: &[pb::ChunkDigest], decided: &[Placed]) {
    for (d, p) in digests.iter().zip(decided) {
        for id in &p.decision.chosen {
            let c = up.charged.entry(id.clone()).or_default();
            c.0 = c.0.saturating_add(d.size);
            c.1 += 1;
        }
    }
}

/// The window continues the upload: indices in order from its placed chunks, every
/// chunk full but a last, shorter one, within the size it was begun with. Returns the
/// upload's shape with the size it will have once the window is placed, and the index
/// of the window's first chunk.
fn check_window(
    st: &State,
    upload_id: &str,
    digests: &[pb::ChunkDigest],
) -> Result<(UploadShape, usize)> {
    let up = st
        .uploads
        .get(upload_id)
        .ok_or_else(|| Error::NotFound(format!("unknown or expired upload {upload_id:?}")))?;
    let bound = up.streaming.ok_or_else(|| {
        Error::FailedPrecondition(format!("upload {upload_id:?} is not a streaming upload"))
    })?;
    let first = up.chunks.len();
    // A shorter chunk ends the stream: nothing may follow it.
    let sealed = up.size % up.chunk_size != 0;
    if sealed {
        return Err(Error::InvalidArgument(format!(
            "upload {upload_id:?} already ended with a short chunk ({} bytes placed)",
            up.size
        )));
    }
    let mut size = up.size;
    for (i, d) in digests.iter().enumerate() {
        let want = first + i;
        if d.index as usize != want {
            return Err(Error::InvalidArgument(format!(
                "windows go in order: chunk index {want} expected, got {}",
                d.index
            )));
        }
        if d.size == 0 || d.size > up.chunk_size {
            return Err(Error::InvalidArgument(format!(
                "chunk {want} must be 1 to {} bytes, got {}",
                up.chunk_size, d.size
            )));
        }
        if d.size < up.chunk_size && i + 1 != digests.len() {
            return Err(Error::InvalidArgument(format!(
                "chunk {want} is short ({} of {} bytes) but is not the last",
                d.size, up.chunk_size
            )));
        }
        size += d.size;
    }
    if size > bound {
        return Err(Error::InvalidArgument(format!(
            "the stream passes the {bound} bytes its upload was begun with ({size} placed)"
        )));
    }
    Ok((
        UploadShape {
            name: up.name.clone(),
            overwrite: up.overwrite,
            replicas: up.replicas,
            chunk_size: up.chunk_size,
            size,
        },
        first,
    ))
}
