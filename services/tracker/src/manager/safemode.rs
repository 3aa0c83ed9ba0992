//! Safe mode (as HDFS's): after a start nothing is queued, trimmed or collected until the
//! peers have reported; when it ends, the chunks no peer reported are found and marked.

use super::*;

/// Between two slices of a long pass under the state lock, leave it free for as long as
/// the last slice held it (at least 200 µs). The mutex is not fair: re-taking it at once
/// let a catalogue walk hold it ~98 % of the time for seconds, and heartbeats queued
/// behind it for hundreds of milliseconds; at half the time the walk takes twice as long
/// and every waiting call gets through.
pub(super) fn step_aside(held: Duration) {
    std::thread::sleep(held.max(Duration::from_micros(200)));
}

/// Mark for evaluation every catalogue chunk no peer reported, walking the names in
/// order a slice at a time: at millions of chunks one pass under the lock stalled every
/// heartbeat for most of a second.
pub(super) fn mark_unreported(t: &Tracker) {
    let mut after: Option<String> = None;
    let mut unreported = 0usize;
    loop {
        let mut st = t.state();
        let held = std::time::Instant::now();
        let (mut seen, mut last, mut done) = (0usize, None, true);
        let mut found: Vec<Hash> = Vec::new();
        for (name, rec) in st.catalogue.names_after(after.as_deref()) {
            if seen >= SLICE * 32 {
                done = false;
                break;
            }
            if let Some(f) = st.catalogue.file(&rec.id) {
                seen += f.chunks.len();
                found.extend(f.chunks.iter().filter(|h| !st.locations.has(h)));
            }
            last = Some(name.clone());
        }
        unreported += found.len();
        st.dirty.extend(found);
        drop(st);
        if done {
            break;
        }
        after = last;
        step_aside(held.elapsed());
    }
    if unreported > 0 {
        info!(unreported, "chunks no peer reported are evaluated");
    }
}

/// Safe mode ends one `dead_after` after the start once nearly every chunk (99.9 %) has
/// been reported by some peer, as HDFS leaves it at a threshold of reported blocks, and
/// no peer has registered for two heartbeats (a chunk reported by two of its three
/// holders is not under-replicated while the third is still registering); at the latest
/// after ten `dead_after`s: a registration storm outlasting the first delay is not taken
/// for lost chunks.
pub(super) fn safe_mode_over(st: &State, cfg: &crate::config::TrackerConfig, now: Instant) -> bool {
    let Some(started) = st.started else {
        return true;
    };
    let up = now.saturating_duration_since(started);
    if up < cfg.liveness.dead_after {
        return false;
    }
    let chunks = st.catalogue.chunk_count();
    let reported = st.locations.chunk_count();
    // Registrations have stopped for two heartbeats: every peer that is up is back.
    let quiet = st
        .last_registration
        .is_none_or(|at| now.saturating_duration_since(at) >= cfg.liveness.heartbeat * 2);
    up >= cfg.liveness.dead_after * 10 || (quiet && reported as f64 >= chunks as f64 * 0.999)
}
