//! File names: what the catalogue accepts, and how a name from the network may become
//! a local path (it may not, except as a plain final component).

pub const MAX_NAME_BYTES: usize = 255;
/// Characters of client input echoed back in an error or a log line.
pub const ECHO_CHARS: usize = 80;

/// Client input fit to echo: at most [`ECHO_CHARS`] characters, with `…` when cut.
pub fn echo(s: &str) -> String {
    let mut out: String = s.chars().take(ECHO_CHARS).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadName {
    #[error("file name is empty")]
    Empty,
    #[error("file name is {0} bytes, the limit is {MAX_NAME_BYTES}")]
    TooLong(usize),
    #[error("file name contains a control character (byte {0:#04x})")]
    Control(u32),
    #[error("file name {0:?} is 64 hex characters: it would shadow a content id (StatFile, get and rm take both)")]
    LooksLikeId(String),
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
    if name.parse::<crate::hash::Hash>().is_ok() {
        return Err(BadName::LooksLikeId(name.to_string()));
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
        assert!(matches!(
            validate(&"0f".repeat(32)),
            Err(BadName::LooksLikeId(_))
        ));
        assert!(matches!(
            validate(&"0F".repeat(32)),
            Err(BadName::LooksLikeId(_))
        ));
        assert!(validate(&"0f".repeat(31)).is_ok());
        assert!(validate(&format!("{}.txt", "0f".repeat(32))).is_ok());
        assert_eq!(echo(&"x".repeat(1000)).chars().count(), ECHO_CHARS + 1);
        assert_eq!(echo("short"), "short");
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
