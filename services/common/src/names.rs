//! File names: what the catalogue accepts, and how a name from the network may become
//! a local path (it may not, except as a plain final component).

pub const MAX_NAME_BYTES: usize = 255;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadName {
    #[error("file name is empty")]
    Empty,
    #[error("file name is {0} bytes, the limit is {MAX_NAME_BYTES}")]
    TooLong(usize),
    #[error("file name contains a control character (byte {0:#04x})")]
    Control(u32),
}

/// Validate a catalogue name: non-empty, at most 255 bytes, no NUL or control characters.
pub fn validate(name: &str) -> Result<(), BadName> {
    if name.is_empty() {
        return Err(BadName::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(BadName::TooLong(name.len()));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(BadName::Control(c as u32));
    }
    Ok(())
}

/// A safe local file name for a catalogue name: its last path component, never `.`,
/// `..` or empty. `None` when nothing usable is left (the caller falls back to the id).
pub fn local_file_name(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let last = last.trim();
    if last.is_empty() || last == "." || last == ".." || last.chars().any(|c| c.is_control()) {
        None
    } else {
        Some(last.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        assert_eq!(validate(""), Err(BadName::Empty));
        assert_eq!(validate(&"x".repeat(256)), Err(BadName::TooLong(256)));
        assert!(validate(&"x".repeat(255)).is_ok());
        assert_eq!(validate("a\0b"), Err(BadName::Control(0)));
        assert_eq!(validate("a\nb"), Err(BadName::Control(10)));
        assert!(validate("dir/üñí.txt").is_ok());
    }

    #[test]
    fn local_names_never_escape() {
        assert_eq!(local_file_name("a/b/c.txt").as_deref(), Some("c.txt"));
        assert_eq!(
            local_file_name("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(local_file_name("..").as_deref(), None);
        assert_eq!(local_file_name("a/").as_deref(), None);
        assert_eq!(local_file_name("x\\..\\y").as_deref(), Some("y"));
    }
}
