//! Paging of `ListFiles` and `SearchFiles`: the page size, the page token, and the walk
//! that fills one page from names in byte order. It owns no state: the catalogue hands
//! it an iterator that already starts after the token's name (a map range, never a scan
//! from the start), so a page of a listing costs its own size whatever the catalogue's.
//!
//! The token is the hex of the last name of the previous page. Clients treat it as
//! opaque; it needs no server-side cursor, survives a tracker restart or failover, and
//! stays valid when that name is deleted meanwhile (the next page starts after where it
//! was).

use crate::error::Error;

/// Names per page when the caller asks for 0 (an old client that knows no paging).
pub const DEFAULT_PAGE_SIZE: usize = 1_000;
/// Larger requests are served this many names: one reply stays a few MB at most.
pub const MAX_PAGE_SIZE: usize = 10_000;

/// One page: the items, and the name to continue after when more names follow.
#[derive(Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub last: Option<String>,
}

impl<T> Page<T> {
    /// The `next_page_token` of the response: empty on the last page.
    pub fn next_token(&self) -> String {
        self.last.as_deref().map(encode_token).unwrap_or_default()
    }
}

/// The page size a request gets: 0 is the default, anything above the maximum is clamped.
pub fn page_size(requested: u32) -> usize {
    match usize::try_from(requested).unwrap_or(MAX_PAGE_SIZE) {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

pub fn encode_token(last_name: &str) -> String {
    hex::encode(last_name.as_bytes())
}

/// The name a page token continues after; `None` for the empty token (the first page).
/// The token itself is never echoed: it may be anything a caller sent.
pub fn decode_token(token: &str) -> Result<Option<String>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| {
        Error::InvalidArgument(format!(
            "page_token is not one this tracker issued ({why}): pass the next_page_token of \
             the previous ListFiles/SearchFiles response, or an empty page_token for the first page"
        ))
    };
    if token.len() > 2 * shoal_common::names::MAX_NAME_BYTES {
        return Err(bad(&format!(
            "{} characters, longer than any name's token",
            token.len()
        )));
    }
    let bytes = hex::decode(token).map_err(|_| bad("not hex"))?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| bad("not a UTF-8 name"))
}

/// Fill one page from `names` (in byte order, already after the token's name): items
/// whose name contains `query` (case-insensitive; `None` takes every name), at most
/// `size` of them. A search walks names until the page is full or the names end, so
/// a rare query may scan much of the catalogue for one page; a listing walks `size`
/// names (plus any `summarise` skips). More names after a full page earn a token, so
/// a search's last page may come back empty.
pub fn fill<'a, V: 'a, T>(
    names: impl Iterator<Item = (&'a String, &'a V)>,
    query: Option<&str>,
    size: usize,
    mut summarise: impl FnMut(&str, &V) -> Option<T>,
) -> Page<T> {
    let q = query.map(str::to_lowercase);
    let mut names = names.peekable();
    let mut items = Vec::new();
    let mut last = None;
    while items.len() < size {
        let Some((name, v)) = names.next() else {
            return Page { items, last: None };
        };
        if q.as_deref()
            .is_some_and(|q| !name.to_lowercase().contains(q))
        {
            continue;
        }
        if let Some(item) = summarise(name, v) {
            items.push(item);
            last = Some(name);
        }
    }
    Page {
        items,
        last: names.peek().and(last).cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::ops::Bound;

    /// Fill a page the way the catalogue does: a range after the token's name.
    fn page(
        names: &BTreeMap<String, u32>,
        query: Option<&str>,
        size: u32,
        token: &str,
    ) -> Result<(Vec<String>, String), Error> {
        let after = decode_token(token)?;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let p = fill(
            names.range::<String, _>((start, Bound::Unbounded)),
            query,
            page_size(size),
            |n, _| Some(n.to_string()),
        );
        Ok((p.items.clone(), p.next_token()))
    }

    /// Every page until the token is empty, checking each is at most `size` long.
    fn all_pages(
        names: &BTreeMap<String, u32>,
        query: Option<&str>,
        size: u32,
    ) -> (Vec<String>, usize) {
        let (mut got, mut token, mut pages) = (Vec::new(), String::new(), 0);
        loop {
            let (items, next) = page(names, query, size, &token).expect("our own token");
            assert!(items.len() <= page_size(size), "page of {}", items.len());
            got.extend(items);
            pages += 1;
            if next.is_empty() {
                return (got, pages);
            }
            token = next;
        }
    }

    /// 2,500 names, some non-ASCII, in an order that is not byte order when inserted.
    fn catalogue() -> BTreeMap<String, u32> {
        (0..2_500u32)
            .rev()
            .map(|i| {
                let name = match i % 5 {
                    0 => format!("Report-{i:05}.PDF"),
                    1 => format!("ünïcode/{i}"),
                    2 => format!("a b {i}"),
                    _ => format!("data/{i:04}.bin"),
                };
                (name, i)
            })
            .collect()
    }

    #[test]
    fn pages_cover_every_name_once_in_byte_order() {
        let names = catalogue();
        let want: Vec<String> = names.keys().cloned().collect();
        for size in [1, 7, 999, 1_000, 2_499, 2_500, 2_501] {
            let (got, pages) = all_pages(&names, None, size);
            assert_eq!(got, want, "page size {size}");
            assert_eq!(
                pages,
                want.len().div_ceil(size as usize),
                "page size {size}"
            );
        }
        // Page size 0 is the default; an old client gets the first 1,000 and a token.
        let (first, next) = page(&names, None, 0, "").unwrap();
        assert_eq!(first, want[..DEFAULT_PAGE_SIZE]);
        assert_eq!(next, encode_token(&want[DEFAULT_PAGE_SIZE - 1]));
        let (got, pages) = all_pages(&names, None, 0);
        assert_eq!((got, pages), (want, 3));
    }

    #[test]
    fn page_size_is_clamped_to_the_maximum() {
        assert_eq!(page_size(0), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(10_000), MAX_PAGE_SIZE);
        assert_eq!(page_size(10_001), MAX_PAGE_SIZE);
        assert_eq!(page_size(u32::MAX), MAX_PAGE_SIZE);
        let names: BTreeMap<String, u32> = (0..12_000).map(|i| (format!("{i:05}"), i)).collect();
        let (items, next) = page(&names, None, u32::MAX, "").unwrap();
        assert_eq!(items.len(), MAX_PAGE_SIZE);
        assert!(!next.is_empty());
    }

    #[test]
    fn search_pages_hold_only_matches_and_cover_them_all() {
        let names = catalogue();
        let want: Vec<String> = names
            .keys()
            .filter(|n| n.to_lowercase().contains("report"))
            .cloned()
            .collect();
        assert_eq!(want.len(), 500);
        for size in [1, 3, 100, 500, 501] {
            let (got, _) = all_pages(&names, Some("REPORT"), size);
            assert_eq!(got, want, "page size {size}");
        }
        // A query nothing matches scans everything for one empty, last page.
        assert_eq!(
            page(&names, Some("zzz"), 10, "").unwrap(),
            (vec![], String::new())
        );
    }

    #[test]
    fn a_deleted_token_name_still_continues_after_it() {
        let mut names = catalogue();
        let (first, next) = page(&names, None, 10, "").unwrap();
        names.remove(&first[9]);
        let (second, _) = page(&names, None, 10, &next).unwrap();
        let want: Vec<String> = names.keys().skip(9).take(10).cloned().collect();
        assert_eq!(second, want);
    }

    #[test]
    fn bad_tokens_are_refused_with_a_clear_message() {
        let names = catalogue();
        let too_long = "ab".repeat(300);
        for (token, why) in [
            ("not-hex!", "not hex"),
            ("abc", "not hex"),
            ("ff", "not a UTF-8 name"),
            (too_long.as_str(), "longer than any name"),
        ] {
            let Err(Error::InvalidArgument(m)) = page(&names, None, 10, token) else {
                panic!("{token:?} was accepted");
            };
            assert!(m.contains("page_token") && m.contains(why), "{m}");
            assert!(m.len() < 300, "the token is not echoed: {m}");
        }
    }
}
