//! File names from the network: `validate` (what the catalogue accepts) and
//! `local_file_name` (what a name may become on a local disk). The invariant that
//! matters: a local name is one plain path component, never a way out of the directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_common::names::{local_file_name, validate, MAX_NAME_BYTES};

fuzz_target!(|name: &str| {
    match validate(name) {
        Ok(()) => {
            assert!(!name.is_empty() && name.len() <= MAX_NAME_BYTES);
            assert!(!name.chars().any(char::is_control));
        }
        Err(e) => assert!(!e.to_string().contains('\n')),
    }
    if let Some(local) = local_file_name(name) {
        assert!(!local.is_empty(), "{name:?} → empty");
        assert!(!local.contains(['/', '\\']), "{name:?} → {local:?}");
        assert!(local != ".." && local != ".", "{name:?} → {local:?}");
        assert!(!local.chars().any(char::is_control), "{name:?} → {local:?}");
        assert!(!local.contains('\0'));
        let p = std::path::Path::new(&local);
        assert_eq!(p.components().count(), 1, "{name:?} → {local:?}");
        assert!(
            matches!(p.components().next(), Some(std::path::Component::Normal(_))),
            "{name:?} → {local:?}"
        );
    }
});
