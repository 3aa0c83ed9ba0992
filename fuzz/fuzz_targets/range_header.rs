//! The webserver's `Range` header parser against any header value and file size.
//! Invariants: a partial answer lies inside the file and is never empty; a file with
//! bytes is never "unsatisfiable" for a range starting inside it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_webserver::http::download::{parse_range, Ranged};

fuzz_target!(|input: (&str, u64)| {
    let (value, size) = input;
    // Small sizes are where the edge cases are; keep them common.
    for size in [size, size % 64] {
        match parse_range(value, size) {
            Ranged::Full => {}
            Ranged::Part(first, last) => {
                assert!(first <= last, "{value:?} on {size}: {first} > {last}");
                assert!(last < size, "{value:?} on {size}: ends at {last}");
            }
            Ranged::Unsatisfiable => {}
        }
    }
});
