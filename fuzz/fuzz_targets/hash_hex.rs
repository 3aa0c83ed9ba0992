//! `Hash::from_str`: chunk and file ids from the network. Accepts exactly 64 hex digits,
//! round-trips to lowercase, and never echoes more than 80 characters back in an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_common::hash::Hash;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match s.parse::<Hash>() {
        Ok(h) => {
            assert_eq!(s.len(), 64);
            assert_eq!(h.to_hex(), s.to_ascii_lowercase());
            assert_eq!(h.to_hex().parse::<Hash>().ok(), Some(h));
        }
        Err(e) => {
            assert!(s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()));
            // The error shows at most 80 characters of the input, whatever its size.
            assert!(e.to_string().len() < 1024, "error echoes too much");
        }
    }
    let _ = shoal_common::hash::parse(s);
});
