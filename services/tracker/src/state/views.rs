//! What the state answers to queries: peer info, file summaries, listings and file
//! detail, built from the catalogue, the locations and peer liveness.

use super::*;

impl State {
    pub fn peer_info(&self, p: &PeerEntry, cfg: &TrackerConfig, now: Instant) -> pb::PeerInfo {
        pb::PeerInfo {
            peer: Some(p.peer_ref()),
            state: self.peer_state(p, cfg, now) as i32,
            capacity_bytes: p.capacity,
            used_bytes: p.used,
            chunks: self.locations.of(&p.id).len() as u64,
            active_transfers: p.active_transfers,
            last_heartbeat_ms_ago: now.saturating_duration_since(p.last_seen).as_millis() as u64,
        }
    }

    // ---- catalogue reads ----------------------------------------------------------

    pub fn summary(
        &self,
        name: &str,
        n: &NameRecord,
        cfg: &TrackerConfig,
        now: Instant,
    ) -> Option<pb::FileSummary> {
        let f = self.catalogue.file(&n.id)?;
        Some(self.file_summary(name, f, n.created_ms, cfg, now))
    }

    /// A file's summary under `name`; the file need not be in the catalogue yet.
    pub fn file_summary(
        &self,
        name: &str,
        f: &FileRecord,
        created_ms: i64,
        cfg: &TrackerConfig,
        now: Instant,
    ) -> pb::FileSummary {
        let min = f
            .chunks
            .iter()
            .map(|h| self.live_holders(h, cfg, now).len() as u32)
            .min();
        summarise(name, f, created_ms, min)
    }

    /// One page of names after `after` (see `paging::fill`).
    pub fn list(
        &self,
        query: Option<&str>,
        after: Option<&str>,
        size: usize,
        cfg: &TrackerConfig,
        now: Instant,
    ) -> crate::paging::Page<pb::FileSummary> {
        crate::paging::fill(self.catalogue.names_after(after), query, size, |name, n| {
            self.summary(name, n, cfg, now)
        })
    }

    pub fn detail(
        &self,
        name_or_id: &str,
        cfg: &TrackerConfig,
        now: Instant,
    ) -> Result<pb::FileDetail> {
        let (name, f) = self.catalogue.resolve(name_or_id)?;
        let names = self.catalogue.names_of(&f.id);
        let name = name.or_else(|| names.first().cloned()).unwrap_or_default();
        let record = self.catalogue.name(&name).cloned().unwrap_or(NameRecord {
            id: f.id,
            created_ms: f.created_ms,
        });
        // Holders are looked up once per chunk: the summary's minimum comes from them.
        let chunks: Vec<pb::ChunkReplicas> = f
            .chunks
            .iter()
            .enumerate()
            .map(|(i, h)| pb::ChunkReplicas {
                index: i as u32,
                hash: h.to_hex(),
                size: crate::fragment::chunk_len(f.size, f.chunk_size, i as u64),
                replicas: self
                    .live_holders(h, cfg, now)
                    .iter()
                    .map(|p| p.peer_ref())
                    .collect(),
                placement_reason: self.placement_reasons.get(h).cloned().unwrap_or_default(),
            })
            .collect();
        let min = chunks.iter().map(|c| c.replicas.len() as u32).min();
        let summary = self
            .catalogue
            .file(&record.id)
            .map(|f| summarise(&name, f, record.created_ms, min));
        Ok(pb::FileDetail {
            summary,
            chunks,
            names,
        })
    }
}

/// A file's summary, given the fewest live copies of any of its chunks (`None`: no chunks).
fn summarise(name: &str, f: &FileRecord, created_ms: i64, min: Option<u32>) -> pb::FileSummary {
    let replicas_min = min.unwrap_or(f.replicas);
    let status = if replicas_min == 0 {
        pb::FileStatus::Unavailable
    } else if replicas_min < f.replicas {
        pb::FileStatus::UnderReplicated
    } else {
        pb::FileStatus::Healthy
    };
    pb::FileSummary {
        name: name.to_string(),
        id: f.id.to_hex(),
        size: f.size,
        chunk_size: f.chunk_size,
        chunks: f.chunks.len() as u32,
        replicas_target: f.replicas,
        replicas_min,
        status: status as i32,
        created_unix_ms: created_ms,
    }
}
