//! The webserver's HTTP token extraction (`authorization` header, `token` query
//! parameter, `shoal_token` cookie: `http::presented_token`) and the role check behind
//! it (`Tokens::authorize`), with a fixed token set, against any header bytes.
//!
//! Invariants: nothing panics; a role is granted only when a configured token of that
//! role or higher appears, as it is, in what the client sent (a header value, or the
//! percent-decoded query); the cookie set from the query carries a token that was
//! accepted and nothing else; the honest forms (a bearer header, the cookie among
//! others, the query parameter) are accepted.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use libfuzzer_sys::fuzz_target;
use shoal_common::auth::{Role, Tokens};
use shoal_webserver::http::{presented_token, token_cookie};

const READ: &str = "read-token-0123456789abcdef";
const WRITE: &str = "write-token-0123456789abcdef";
const CLUSTER: &str = "cluster-token-0123456789abcdef";

fn tokens() -> &'static Tokens {
    static T: OnceLock<Tokens> = OnceLock::new();
    T.get_or_init(|| Tokens {
        cluster: Some(CLUSTER.into()),
        read: Some(READ.into()),
        write: Some(WRITE.into()),
        previous: Vec::new(),
    })
}

/// A piece of a header value: bytes, or a configured token (or a near miss of one)
/// so the fuzzer reaches the accepting paths without guessing 27 bytes.
#[derive(Arbitrary, Debug)]
enum Part {
    Bytes(Vec<u8>),
    Token(u8),
    /// A token with one byte changed.
    Flipped(u8, u8),
    /// A token cut short.
    Cut(u8, u8),
    Bearer,
    Cookie,
    /// `token=`, the query parameter.
    Param,
    Ampersand,
    Semicolon,
    Space,
}

fn token(which: u8) -> &'static str {
    [READ, WRITE, CLUSTER][which as usize % 3]
}

fn assemble(parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        match p {
            Part::Bytes(b) => out.extend_from_slice(b),
            Part::Token(w) => out.extend_from_slice(token(*w).as_bytes()),
            Part::Flipped(w, at) => {
                let mut t = token(*w).as_bytes().to_vec();
                let i = *at as usize % t.len();
                t[i] = t[i].wrapping_add(1);
                out.extend_from_slice(&t);
            }
            Part::Cut(w, n) => {
                let t = token(*w).as_bytes();
                out.extend_from_slice(&t[..*n as usize % t.len()]);
            }
            Part::Bearer => out.extend_from_slice(b"Bearer "),
            Part::Cookie => out.extend_from_slice(b"shoal_token="),
            Part::Param => out.extend_from_slice(b"token="),
            Part::Ampersand => out.push(b'&'),
            Part::Semicolon => out.extend_from_slice(b"; "),
            Part::Space => out.push(b' '),
        }
    }
    out
}

#[derive(Arbitrary, Debug)]
struct Input {
    authorization: Option<Vec<Part>>,
    /// One `cookie` header each.
    cookies: Vec<Vec<Part>>,
    /// The query string (after `?`).
    query: Option<Vec<Part>>,
    /// An honest request added next to the fuzzed one.
    honest: Honest,
}

#[derive(Arbitrary, Debug)]
enum Honest {
    None,
    Bearer(u8),
    Cookie(u8, Vec<u8>),
    Query(u8),
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The highest role whose token (or a higher one) appears in any of `sent`.
fn best_role_in(sent: &[Vec<u8>]) -> Option<Role> {
    let mut best = None;
    for (t, r) in [
        (READ, Role::Read),
        (WRITE, Role::Write),
        (CLUSTER, Role::Cluster),
    ] {
        if sent.iter().any(|s| contains(s, t.as_bytes())) {
            best = best.max(Some(r));
        }
    }
    best
}

fn check(headers: &HeaderMap, query: Option<&str>, sent: &[Vec<u8>]) {
    let p = presented_token(headers, query);
    let best = best_role_in(sent);
    let t = tokens();
    for needed in [Role::Read, Role::Write, Role::Cluster] {
        if t.authorize(p.header.as_deref(), needed).is_ok() {
            assert!(
                best.is_some_and(|b| b >= needed),
                "{needed:?} granted, best token sent {best:?}: {headers:?} {query:?} → {p:?}"
            );
        }
    }
    if let Some(h) = &p.header {
        if let Some(r) = h.strip_prefix("Bearer ").and_then(|v| t.role_of(v.trim())) {
            assert!(
                best.is_some_and(|b| b >= r),
                "{h:?} is {r:?}, best {best:?}"
            );
        }
    }
    // The cookie is set when the request is accepted and the query had a token: it must
    // carry that accepted token and no attribute of the client's.
    if t.authorize(p.header.as_deref(), Role::Read).is_ok() {
        if let Some(v) = p.from_query.as_deref().and_then(token_cookie) {
            // Not `to_str`: a header value may hold UTF-8 beyond ASCII.
            let v = String::from_utf8(v.as_bytes().to_vec()).expect("built from a str");
            let value = v
                .strip_prefix("shoal_token=")
                .and_then(|r| r.split(';').next())
                .expect("shoal_token=…; attributes");
            assert!(
                t.role_of(value.trim()).is_some(),
                "cookie set to {v:?}, which is no token: {headers:?} {query:?}"
            );
            assert!(
                v.ends_with("; Path=/; HttpOnly; SameSite=Strict") && v.matches(';').count() == 3,
                "cookie {v:?} carries attributes of the client's"
            );
        }
    }
}

fuzz_target!(|input: Input| {
    let mut headers = HeaderMap::new();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    if let Some(a) = &input.authorization {
        let bytes = assemble(a);
        // A value hyper would refuse never reaches the middleware.
        if let Ok(v) = HeaderValue::from_bytes(&bytes) {
            headers.append(header::AUTHORIZATION, v);
            sent.push(bytes);
        }
    }
    for c in &input.cookies {
        let bytes = assemble(c);
        if let Ok(v) = HeaderValue::from_bytes(&bytes) {
            headers.append(header::COOKIE, v);
            sent.push(bytes);
        }
    }
    let uri = input.query.as_ref().and_then(|q| {
        let mut raw = b"/?".to_vec();
        raw.extend(assemble(q));
        Uri::try_from(raw.as_slice()).ok()
    });
    if let Some(q) = uri.as_ref().and_then(Uri::query) {
        sent.push(q.as_bytes().to_vec());
        // The query is percent-decoded before it is checked.
        sent.push(percent_encoding::percent_decode_str(q).collect());
    }
    check(&headers, uri.as_ref().and_then(Uri::query), &sent);

    // Honest forms are accepted for their role, whatever junk is around them when the
    // form has precedence (bearer over query over cookie).
    let (headers, query, role) = match input.honest {
        Honest::None => return,
        Honest::Bearer(w) => {
            let mut h = HeaderMap::new();
            let v = HeaderValue::from_str(&format!("Bearer {}", token(w))).expect("ascii");
            h.insert(header::AUTHORIZATION, v);
            for c in headers.get_all(header::COOKIE) {
                h.append(header::COOKIE, c.clone());
            }
            (h, None, w)
        }
        Honest::Cookie(w, junk) => {
            // Other cookies before ours, as a browser sends them.
            let junk: String = junk.into_iter().map(|b| (b % 26 + b'a') as char).collect();
            let v = format!("{junk}=1; shoal_token={}; last=2", token(w));
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, HeaderValue::from_str(&v).expect("ascii"));
            (h, None, w)
        }
        Honest::Query(w) => (HeaderMap::new(), Some(format!("a=1&token={}", token(w))), w),
    };
    let p = presented_token(&headers, query.as_deref());
    let want = [Role::Read, Role::Write, Role::Cluster][role as usize % 3];
    assert!(
        tokens().authorize(p.header.as_deref(), want).is_ok(),
        "honest {want:?} refused: {headers:?} {query:?} → {p:?}"
    );
});
