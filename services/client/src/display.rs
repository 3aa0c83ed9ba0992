//! How sizes and states read for people and scripts, the same in the CLI and the web UI.

use shoal_proto::v1 as pb;

/// Bytes in binary units: `512 B`, `1.5 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A file's replica health as `--json` says it.
pub fn status_word(s: i32) -> &'static str {
    match pb::FileStatus::try_from(s).unwrap_or(pb::FileStatus::Unspecified) {
        pb::FileStatus::Healthy => "healthy",
        pb::FileStatus::UnderReplicated => "under_replicated",
        pb::FileStatus::Unavailable => "unavailable",
        pb::FileStatus::Unspecified => "unknown",
    }
}

/// A peer's state as `--json` says it.
pub fn state_word(s: i32) -> &'static str {
    match pb::PeerState::try_from(s).unwrap_or(pb::PeerState::Unspecified) {
        pb::PeerState::Alive => "alive",
        pb::PeerState::Suspect => "suspect",
        pb::PeerState::Dead => "dead",
        pb::PeerState::Draining => "draining",
        pb::PeerState::Drained => "drained",
        pb::PeerState::Restarting => "restarting",
        pb::PeerState::Unspecified => "unknown",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::human(0), "0 B");
        assert_eq!(super::human(1023), "1023 B");
        assert_eq!(super::human(1536), "1.5 KiB");
        assert_eq!(super::human(1 << 30), "1.0 GiB");
    }
}
