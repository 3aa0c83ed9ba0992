//! Peer liveness: alive, suspect, dead or restarting within its grace, judged from
//! the last heartbeat and the goodbye a peer said; and the copies that count.

use super::*;

impl State {
    /// The goodbye a peer said, if it has not been heard from since (another replica
    /// may have heard it: its `last_seen` is then newer).
    pub fn goodbye(&self, p: &PeerEntry) -> Option<Goodbye> {
        self.goodbyes
            .get(&p.id)
            .copied()
            .filter(|g| p.last_seen <= g.at())
    }

    /// A peer heard from (register, heartbeat) is no longer gone.
    pub fn heard_from(&mut self, peer_id: &str) {
        self.goodbyes.remove(peer_id);
    }

    /// A peer restarting within its grace: offline, its copies expected back.
    pub fn restarting(&self, p: &PeerEntry, cfg: &TrackerConfig, now: Instant) -> bool {
        matches!(self.goodbye(p), Some(Goodbye::Restarting(at))
            if !p.draining && now.saturating_duration_since(at) < cfg.repair.restart_grace)
    }

    pub fn liveness(&self, p: &PeerEntry, cfg: &TrackerConfig, now: Instant) -> Liveness {
        if self.goodbye(p).is_some() {
            // Stopped: it neither serves nor takes copies, whatever it said.
            return Liveness::Dead;
        }
        let seen = match self.started {
            Some(started) => p.last_seen.max(started),
            None => p.last_seen,
        };
        let age = now.saturating_duration_since(seen);
        if age >= cfg.liveness.dead_after {
            Liveness::Dead
        } else if age >= cfg.liveness.suspect_after {
            Liveness::Suspect
        } else {
            Liveness::Alive
        }
    }

    pub fn peer_state(&self, p: &PeerEntry, cfg: &TrackerConfig, now: Instant) -> pb::PeerState {
        if self.restarting(p, cfg, now) {
            return pb::PeerState::Restarting;
        }
        match (self.liveness(p, cfg, now), p.draining) {
            (Liveness::Dead, _) => pb::PeerState::Dead,
            (_, true) if self.drain_remaining(&p.id, cfg, now) == 0 => pb::PeerState::Drained,
            (_, true) => pb::PeerState::Draining,
            (Liveness::Suspect, _) => pb::PeerState::Suspect,
            (Liveness::Alive, _) => pb::PeerState::Alive,
        }
    }

    /// Peers holding `chunk` that are not dead, alive before suspect.
    pub fn live_holders(&self, chunk: &Hash, cfg: &TrackerConfig, now: Instant) -> Vec<&PeerEntry> {
        let mut out: Vec<(&PeerEntry, Liveness)> = self
            .locations
            .holders(chunk)
            .filter_map(|id| self.peers.get(id))
            .map(|p| (p, self.liveness(p, cfg, now)))
            .filter(|(_, l)| *l != Liveness::Dead)
            .collect();
        // Borrowed keys: no allocation per comparison (this runs per chunk, per stat).
        out.sort_by(|(a, la), (b, lb)| {
            let key = |p: &PeerEntry, l: &Liveness| {
                (*l == Liveness::Suspect, p.draining, p.active_transfers)
            };
            key(a, la)
                .cmp(&key(b, lb))
                .then_with(|| a.id.as_str().cmp(b.id.as_str()))
        });
        out.into_iter().map(|(p, _)| p).collect()
    }

    /// Live copies that count towards the target (draining peers are leaving).
    pub fn durable_count(&self, chunk: &Hash, cfg: &TrackerConfig, now: Instant) -> usize {
        self.live_holders(chunk, cfg, now)
            .iter()
            .filter(|p| !p.draining)
            .count()
    }

    /// Copies on peers restarting within their grace (not draining).
    pub fn expected_count(&self, chunk: &Hash, cfg: &TrackerConfig, now: Instant) -> usize {
        self.locations
            .holders(chunk)
            .filter_map(|id| self.peers.get(id))
            .filter(|p| self.restarting(p, cfg, now))
            .count()
    }

    /// Whether `chunk` needs a new copy to reach `target` (see [`needs_repair`]).
    pub fn below_target(
        &self,
        chunk: &Hash,
        target: u32,
        cfg: &TrackerConfig,
        now: Instant,
    ) -> bool {
        let live = self.durable_count(chunk, cfg, now);
        let target = target as usize;
        live < target && needs_repair(live, self.expected_count(chunk, cfg, now), target)
    }

    /// Chunks of a draining peer that still need a copy elsewhere.
    pub fn drain_remaining(&self, peer_id: &str, cfg: &TrackerConfig, now: Instant) -> usize {
        if !self.peers.contains_key(peer_id) {
            return 0;
        }
        self.locations
            .of(peer_id)
            .iter()
            .filter_map(|h| Some((h, self.catalogue.chunk(h)?)))
            .filter(|(h, c)| {
                let target = c.target() as usize;
                self.durable_count(h, cfg, now) < target
            })
            .count()
    }

    /// Highest replica target among the files that use `chunk`.
    pub fn chunk_target(&self, chunk: &Hash) -> Option<u32> {
        self.catalogue.chunk(chunk).map(|c| c.target())
    }

    pub fn live_peer_count(&self, cfg: &TrackerConfig, now: Instant) -> usize {
        self.peers
            .values()
            .filter(|p| self.liveness(p, cfg, now) == Liveness::Alive && !p.draining)
            .count()
    }

    pub fn live_zone_count(&self, cfg: &TrackerConfig, now: Instant) -> usize {
        self.peers
            .values()
            .filter(|p| self.liveness(p, cfg, now) == Liveness::Alive && !p.draining)
            .map(|p| p.zone.as_str())
            .collect::<HashSet<_>>()
            .len()
    }
}
