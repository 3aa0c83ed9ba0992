//! Fragmentation: the chunk size of a file. About 256 chunks per file, a power of two,
//! clamped to the configured bounds. Small files get the minimum (one chunk or a few);
//! huge files get the maximum and more than 256 chunks.

/// Chunks a file of this policy aims for.
pub const TARGET_CHUNKS: u64 = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragmentation {
    pub chunk_size: u64,
    pub chunks: u64,
    pub reason: String,
}

/// Decide the chunk size for a file of `size` bytes. `min` and `max` are powers of two.
pub fn fragment(size: u64, min: u64, max: u64) -> Fragmentation {
    let ideal = size.div_ceil(TARGET_CHUNKS).max(1).next_power_of_two();
    let chunk_size = ideal.clamp(min, max);
    let clamp = if ideal < min {
        "raised to the minimum"
    } else if ideal > max {
        "lowered to the maximum"
    } else {
        "within bounds"
    };
    let chunks = chunk_count(size, chunk_size);
    Fragmentation {
        chunk_size,
        chunks,
        reason: format!(
            "policy=~{TARGET_CHUNKS} chunks, power of two; ideal={ideal} {clamp} [{min}, {max}]; chunk_size={chunk_size}, chunks={chunks}"
        ),
    }
}

pub fn chunk_count(size: u64, chunk_size: u64) -> u64 {
    size.div_ceil(chunk_size)
}

/// Size of chunk `index` of a file.
pub fn chunk_len(size: u64, chunk_size: u64, index: u64) -> u64 {
    let start = index * chunk_size;
    size.saturating_sub(start).min(chunk_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn examples() {
        assert_eq!(fragment(0, MIB, 64 * MIB).chunk_size, MIB);
        assert_eq!(fragment(0, MIB, 64 * MIB).chunks, 0);
        assert_eq!(fragment(1, MIB, 64 * MIB).chunks, 1);
        assert_eq!(fragment(1024 * MIB, MIB, 64 * MIB).chunk_size, 4 * MIB);
        assert_eq!(fragment(1024 * MIB, MIB, 64 * MIB).chunks, 256);
        assert_eq!(fragment(1 << 50, MIB, 64 * MIB).chunk_size, 64 * MIB);
        assert_eq!(chunk_len(10, 4, 2), 2);
        assert_eq!(chunk_len(12, 4, 2), 4);
    }

    proptest! {
        #[test]
        fn power_of_two_within_bounds(size in 0u64..(1 << 45), min_exp in 12u32..22, span in 0u32..8) {
            let min = 1u64 << min_exp;
            let max = min << span;
            let f = fragment(size, min, max);
            prop_assert!(f.chunk_size.is_power_of_two());
            prop_assert!(f.chunk_size >= min && f.chunk_size <= max);
            prop_assert!(f.chunks * f.chunk_size >= size);
            prop_assert!(f.chunks <= TARGET_CHUNKS || f.chunk_size == max);
            // Every chunk is full but the last, which holds the rest (at least one byte).
            if f.chunks > 0 {
                let last = chunk_len(size, f.chunk_size, f.chunks - 1);
                prop_assert!(last >= 1 && last <= f.chunk_size);
                prop_assert_eq!((f.chunks - 1) * f.chunk_size + last, size);
                prop_assert_eq!(chunk_len(size, f.chunk_size, 0), f.chunk_size.min(size));
            }
        }
    }
}
