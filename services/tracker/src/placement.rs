//! Placement: which peers hold the copies of a chunk. One scoring function serves
//! uploads, repairs and drains, and it is never random:
//!
//! 1. a zone not yet holding the chunk beats one that does (spread over zones);
//! 2. never two copies on one peer; dead, suspect, draining or full peers are out;
//! 3. then more free space (compared in whole MiB so near-equal peers tie);
//! 4. then less load (active transfers plus copies already planned in this batch);
//! 5. then a stable tie-break: rendezvous hash of (chunk, peer), which spreads the
//!    chunks of one file over equal peers the same way every time.
//!
//! The decision carries its reasons so it can be traced and shown.

use std::collections::HashSet;

use shoal_common::hash::Hash;

#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub zone: String,
    pub free_bytes: u64,
    pub load: u64,
    /// Why this peer may not take new copies (suspect, dead, draining), if so.
    pub excluded: Option<&'static str>,
}

#[derive(Debug, Clone, Default)]
pub struct Decision {
    /// Chosen peer ids, best first.
    pub chosen: Vec<String>,
    /// Distinct zones holding the chunk once the chosen copies exist.
    pub zones_covered: usize,
    /// Zones among the eligible candidates and existing holders.
    pub zones_available: usize,
    /// Peers considered (eligible or not).
    pub candidates: usize,
    pub eligible: usize,
    /// One line per chosen peer: how it scored.
    pub scores: Vec<String>,
}

impl Decision {
    pub fn reason(&self) -> String {
        format!(
            "zones {}/{} covered; {} of {} candidates eligible; chose [{}]",
            self.zones_covered,
            self.zones_available,
            self.eligible,
            self.candidates,
            self.scores.join("; ")
        )
    }
}

/// Places chunk after chunk over one set of candidates, charging each choice to the
/// chosen peer (less free space, more load) so one file spreads over equal peers.
/// Zones are numbered and ids hashed once per planner: scoring 10,000 candidates per
/// copy then compares integers, not strings and BLAKE3 hashes.
pub struct Planner {
    candidates: Vec<Candidate>,
    /// Each candidate's zone, as an index into `zones`.
    zone_of: Vec<usize>,
    zones: Vec<String>,
    /// Each candidate's id hashed: half of the rendezvous tie-break.
    id_key: Vec<u64>,
}

/// FNV-1a: a stable hash of a peer id (the same in every process and version).
fn id_key(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The rendezvous score of a (chunk, peer) pair: splitmix64 of both keys mixed.
fn rendezvous(chunk_key: u64, id_key: u64) -> u64 {
    let mut z = (chunk_key ^ id_key).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Planner {
    pub fn new(candidates: Vec<Candidate>) -> Self {
        let mut zones: Vec<String> = Vec::new();
        let mut index: std::collections::HashMap<&str, usize> = Default::default();
        let zone_of = candidates
            .iter()
            .map(|c| {
                *index.entry(c.zone.as_str()).or_insert_with(|| {
                    zones.push(c.zone.clone());
                    zones.len() - 1
                })
            })
            .collect();
        let id_key = candidates.iter().map(|c| id_key(&c.id)).collect();
        Self {
            candidates,
            zone_of,
            zones,
            id_key,
        }
    }

    /// Choose up to `want` new holders for `chunk` of `size` bytes, given the peers
    /// (id, zone) that already hold it.
    pub fn place(
        &mut self,
        chunk: &Hash,
        size: u64,
        want: usize,
        holders: &[(String, String)],
    ) -> Decision {
        let held: HashSet<&str> = holders.iter().map(|(id, _)| id.as_str()).collect();
        // Zones holding the chunk: candidates' zones by number, others by name.
        let mut covered = vec![false; self.zones.len()];
        let mut elsewhere: HashSet<&str> = HashSet::new();
        for (_, z) in holders {
            match self.zones.iter().position(|x| x == z) {
                Some(i) => covered[i] = true,
                None => {
                    elsewhere.insert(z.as_str());
                }
            }
        }
        let mut pool: Vec<usize> = (0..self.candidates.len())
            .filter(|&i| {
                let c = &self.candidates[i];
                c.excluded.is_none() && c.free_bytes >= size && !held.contains(c.id.as_str())
            })
            .collect();
        let mut available = covered.clone();
        for &i in &pool {
            available[self.zone_of[i]] = true;
        }
        let mut d = Decision {
            candidates: self.candidates.len(),
            eligible: pool.len(),
            zones_available: available.iter().filter(|a| **a).count() + elsewhere.len(),
            ..Default::default()
        };
        let chunk_key = u64::from_le_bytes(chunk.0[..8].try_into().expect("8 bytes"));
        for _ in 0..want {
            let best = pool.iter().enumerate().max_by_key(|(_, &i)| {
                let c = &self.candidates[i];
                (
                    !covered[self.zone_of[i]],
                    c.free_bytes >> 20,
                    std::cmp::Reverse(c.load),
                    std::cmp::Reverse(rendezvous(chunk_key, self.id_key[i])),
                )
            });
            let Some((pos, &i)) = best else { break };
            pool.swap_remove(pos);
            let new_zone = !covered[self.zone_of[i]];
            covered[self.zone_of[i]] = true;
            let c = &mut self.candidates[i];
            d.scores.push(format!(
                "{} zone={}{} free_mib={} load={}",
                short(&c.id),
                c.zone,
                if new_zone { " (new zone)" } else { "" },
                c.free_bytes >> 20,
                c.load
            ));
            d.chosen.push(c.id.clone());
            c.free_bytes = c.free_bytes.saturating_sub(size);
            c.load += 1;
        }
        d.zones_covered = covered.iter().filter(|c| **c).count() + elsewhere.len();
        d
    }
}

/// Mark the peers a client saw fail in this upload as not eligible (a hint scoped to
/// the upload: the candidates are rebuilt for every decision, liveness is untouched).
pub fn avoid(candidates: &mut [Candidate], failed: &HashSet<String>) {
    for c in candidates.iter_mut() {
        if c.excluded.is_none() && failed.contains(&c.id) {
            c.excluded = Some("failed in this upload");
        }
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn cand(id: &str, zone: &str, free: u64) -> Candidate {
        Candidate {
            id: id.into(),
            zone: zone.into(),
            free_bytes: free,
            load: 0,
            excluded: None,
        }
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn two_zones_r2_one_copy_each() {
        let mut p = Planner::new(vec![
            cand("a1", "a", GIB),
            cand("a2", "a", GIB),
            cand("b1", "b", GIB),
            cand("b2", "b", GIB),
        ]);
        for i in 0..64u32 {
            let d = p.place(&Hash::of(&i.to_le_bytes()), 1 << 20, 2, &[]);
            assert_eq!(d.chosen.len(), 2);
            let zones: HashSet<char> = d
                .chosen
                .iter()
                .map(|id| id.chars().next().unwrap())
                .collect();
            assert_eq!(zones.len(), 2, "{d:?}");
        }
    }

    #[test]
    fn spreads_a_file_over_equal_peers() {
        let mut p = Planner::new((0..4).map(|i| cand(&format!("p{i}"), "z", GIB)).collect());
        let mut count: HashMap<String, usize> = HashMap::new();
        for i in 0..100u32 {
            for id in p.place(&Hash::of(&i.to_le_bytes()), 1 << 20, 1, &[]).chosen {
                *count.entry(id).or_default() += 1;
            }
        }
        assert_eq!(count.len(), 4);
        assert!(count.values().all(|&n| n == 25), "{count:?}");
    }

    #[test]
    fn prefers_free_space_then_load() {
        let mut p = Planner::new(vec![cand("small", "a", GIB), cand("big", "a", 2 * GIB)]);
        assert_eq!(
            p.place(&Hash::of(b"x"), 1 << 20, 1, &[]).chosen,
            vec!["big"]
        );
        let mut busy = cand("busy", "a", GIB);
        busy.load = 5;
        let mut p = Planner::new(vec![busy, cand("idle", "a", GIB)]);
        assert_eq!(
            p.place(&Hash::of(b"x"), 1 << 20, 1, &[]).chosen,
            vec!["idle"]
        );
    }

    #[test]
    fn holders_count_for_zones_and_are_never_chosen() {
        let mut p = Planner::new(vec![
            cand("a1", "a", GIB),
            cand("a2", "a", 2 * GIB),
            cand("b1", "b", GIB),
        ]);
        let d = p.place(&Hash::of(b"x"), 1, 1, &[("a2".into(), "a".into())]);
        assert_eq!(d.chosen, vec!["b1"]);
        assert_eq!(d.zones_covered, 2);
    }

    /// A replacement for a lost pipeline hop never goes to a peer that failed in the
    /// upload, never to a holder, and still prefers a zone the chunk is not in yet.
    #[test]
    fn replacement_avoids_failed_peers_and_keeps_zone_spread() {
        let cands = || {
            vec![
                cand("a1", "a", GIB),
                cand("a2", "a", 4 * GIB),
                cand("b1", "b", 4 * GIB),
                cand("b2", "b", GIB),
                cand("c1", "c", 4 * GIB),
                cand("c2", "c", GIB),
            ]
        };
        let holders = [("a1".to_string(), "a".to_string())];
        // b1 and c1 (the best-scored peers of the missing zones) failed in this upload.
        let failed: HashSet<String> = ["b1".to_string(), "c1".to_string()].into();
        let mut cs = cands();
        avoid(&mut cs, &failed);
        let d = Planner::new(cs).place(&Hash::of(b"x"), 1 << 20, 2, &holders);
        assert_eq!(d.chosen.len(), 2, "{d:?}");
        let mut chosen = d.chosen.clone();
        chosen.sort();
        // Zones b and c, through the peers that did not fail — not a2 (more space, same zone).
        assert_eq!(chosen, vec!["b2", "c2"], "{d:?}");
        assert_eq!(d.zones_covered, 3);
        // Without the hint the same decision takes the failed peers.
        let d = Planner::new(cands()).place(&Hash::of(b"x"), 1 << 20, 2, &holders);
        let mut chosen = d.chosen.clone();
        chosen.sort();
        assert_eq!(chosen, vec!["b1", "c1"]);
        // Every peer of the other zones failed: the copy goes to zone a, never to a failed peer.
        let failed: HashSet<String> = ["b1", "b2", "c1", "c2"].map(String::from).into();
        let mut cs = cands();
        avoid(&mut cs, &failed);
        let d = Planner::new(cs).place(&Hash::of(b"x"), 1 << 20, 2, &holders);
        assert_eq!(d.chosen, vec!["a2"], "{d:?}");
        // A peer excluded for a real reason keeps that reason.
        let mut cs = cands();
        cs[2].excluded = Some("dead");
        avoid(&mut cs, &failed);
        assert_eq!(cs[2].excluded, Some("dead"));
        assert_eq!(cs[3].excluded, Some("failed in this upload"));
    }

    proptest! {
        #[test]
        fn invariants(
            peers in proptest::collection::vec((0usize..4, 0u64..4, 0u8..4), 1..12),
            r in 1usize..6,
            size in 1u64..(1 << 22),
        ) {
            let cands: Vec<Candidate> = peers.iter().enumerate().map(|(i, &(zone, free_gib, state))| Candidate {
                id: format!("p{i}"),
                zone: format!("z{zone}"),
                free_bytes: free_gib * GIB / 2,
                load: 0,
                excluded: match state { 0 => Some("dead"), 1 => Some("suspect"), _ => None },
            }).collect();
            let eligible: Vec<&Candidate> = cands.iter().filter(|c| c.excluded.is_none() && c.free_bytes >= size).collect();
            let zones: HashSet<&str> = eligible.iter().map(|c| c.zone.as_str()).collect();
            let d = Planner::new(cands.clone()).place(&Hash::of(b"c"), size, r, &[]);
            let unique: HashSet<&String> = d.chosen.iter().collect();
            prop_assert_eq!(unique.len(), d.chosen.len(), "a peer chosen twice");
            prop_assert_eq!(d.chosen.len(), r.min(eligible.len()));
            for id in &d.chosen {
                let c = cands.iter().find(|c| &c.id == id).unwrap();
                prop_assert!(c.excluded.is_none(), "picked a {:?} peer", c.excluded);
                prop_assert!(c.free_bytes >= size, "picked a full peer");
            }
            let covered: HashSet<&str> = d.chosen.iter().map(|id| cands.iter().find(|c| &c.id == id).unwrap().zone.as_str()).collect();
            prop_assert_eq!(covered.len(), r.min(zones.len()));
        }
    }
}
