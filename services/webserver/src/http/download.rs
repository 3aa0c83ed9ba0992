//! `GET`/`HEAD /download/{name-or-id}`: a file streamed from its peers, each chunk
//! verified against its hash before a byte of it is sent, a few chunks fetched ahead.
//!
//! HTTP semantics (RFC 9110): strong `ETag` = the file id, `If-None-Match` → 304,
//! one `Range` (`a-b`, `a-`, `-n`) → 206 with `Content-Range`, a range past the end →
//! 416 with `Content-Range: bytes */SIZE`, `If-Range` honoured, several ranges answered
//! with the whole file. Only the chunks overlapping the range are fetched.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use shoal_common::names;

use super::html::seg;
use super::{AppError, Shared};

/// What a `Range` header asks of a representation of a given size.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranged {
    /// No (usable) range: the whole file, 200.
    Full,
    /// Bytes `first..=last`, 206.
    Part(u64, u64),
    /// Nothing of the file is in the range, 416.
    Unsatisfiable,
}

/// Parse one `Range` header value against `size`. Anything this server does not do
/// (other units, several ranges, bad syntax) is ignored, as RFC 9110 allows.
pub fn parse_range(value: &str, size: u64) -> Ranged {
    let Some((unit, spec)) = value.trim().split_once('=') else {
        return Ranged::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return Ranged::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ranged::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if a.is_empty() {
        // Suffix: the last n bytes.
        if !digits(b) {
            return Ranged::Full;
        }
        let n: u64 = b.parse().unwrap_or(u64::MAX);
        return match (n, size) {
            (0, _) => Ranged::Unsatisfiable,
            (_, 0) => Ranged::Full,
            _ => Ranged::Part(size.saturating_sub(n), size - 1),
        };
    }
    if !digits(a) || !(b.is_empty() || digits(b)) {
        return Ranged::Full;
    }
    // Too many digits for u64 means past the end of any file.
    let first: u64 = a.parse().unwrap_or(u64::MAX);
    let last: u64 = if b.is_empty() {
        u64::MAX
    } else {
        b.parse().unwrap_or(u64::MAX)
    };
    if last < first {
        return Ranged::Full;
    }
    if first >= size {
        return Ranged::Unsatisfiable;
    }
    Ranged::Part(first, last.min(size - 1))
}

/// `If-None-Match` lists our tag (weak comparison) or `*`.
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

/// `Content-Disposition` for a catalogue name: a plain ASCII `filename` for old clients
/// and the exact name in `filename*` (RFC 6266 / 8187). Never a path; characters no
/// common file system accepts become `_` in the ASCII form.
pub fn disposition(name: &str, id: &str) -> String {
    let local = names::local_file_name(name).unwrap_or_else(|| id.to_string());
    let ascii: String = local
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() || c == ' ')
                && !matches!(c, '"' | '\\' | '%' | '<' | '>' | ':' | '|' | '?' | '*')
            {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        seg(&local)
    )
}

fn value(s: &str) -> Result<HeaderValue, AppError> {
    HeaderValue::from_str(s).map_err(|e| {
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("bad header value {s:?}: {e}"),
        )
    })
}

pub async fn download(
    State(st): Shared,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let detail = st.client.stat(&name).await?;
    let s = detail.summary.clone().ok_or_else(|| {
        AppError::new(StatusCode::BAD_GATEWAY, "the tracker sent no file summary")
    })?;
    let size = s.size;
    let etag = format!("\"{}\"", s.id);
    let shown = if detail.names.contains(&name) {
        name.as_str()
    } else {
        s.name.as_str()
    };

    let mut res = Response::new(Body::empty());
    let h = res.headers_mut();
    h.insert(header::ETAG, value(&etag)?);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // The content behind a name can change (overwrite): revalidate, cheaply, by ETag.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if none_match(&headers, &etag) {
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(res);
    }
    h.insert(
        header::CONTENT_DISPOSITION,
        value(&disposition(shown, &s.id))?,
    );

    let if_range_ok = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let ranged = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) if if_range_ok => parse_range(r, size),
        _ => Ranged::Full,
    };
    let (first, end) = match ranged {
        Ranged::Unsatisfiable => {
            *res.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            let h = res.headers_mut();
            h.insert(header::CONTENT_RANGE, value(&format!("bytes */{size}"))?);
            h.remove(header::CONTENT_DISPOSITION);
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            *res.body_mut() =
                Body::from(format!("range not satisfiable: the file is {size} bytes\n"));
            return Ok(res);
        }
        Ranged::Full => (0, size),
        Ranged::Part(a, b) => {
            *res.status_mut() = StatusCode::PARTIAL_CONTENT;
            res.headers_mut().insert(
                header::CONTENT_RANGE,
                value(&format!("bytes {a}-{b}/{size}"))?,
            );
            (a, b + 1)
        }
    };
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, value(&(end - first).to_string())?);
    if method == Method::HEAD {
        return Ok(res);
    }
    let (m, file_id) = (st.clone(), s.id.clone());
    let stream = st.client.range_stream(&detail, first..end, st.cfg.download_ahead).map(move |piece| {
        match &piece {
            Ok(b) => {
                m.metrics.chunks_fetched.inc();
                m.metrics.downloaded_bytes.inc_by(b.len() as u64);
            }
            Err(e) => {
                // Headers are gone: all we can do is cut the body short, which the client sees.
                m.metrics.download_failures.inc();
                tracing::warn!(file.id = %file_id, error = %e, "download aborted: a chunk could not be served");
            }
        }
        piece
    });
    *res.body_mut() = Body::from_stream(stream);
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges() {
        assert_eq!(parse_range("bytes=0-0", 10), Ranged::Part(0, 0));
        assert_eq!(parse_range("bytes=2-5", 10), Ranged::Part(2, 5));
        assert_eq!(parse_range("bytes=2-", 10), Ranged::Part(2, 9));
        assert_eq!(parse_range("bytes=2-100", 10), Ranged::Part(2, 9));
        assert_eq!(parse_range("bytes=-3", 10), Ranged::Part(7, 9));
        assert_eq!(parse_range("bytes=-30", 10), Ranged::Part(0, 9));
        assert_eq!(parse_range("Bytes = 1-1", 10), Ranged::Part(1, 1));
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(parse_range("bytes=10-", 10), Ranged::Unsatisfiable);
        assert_eq!(parse_range("bytes=10-20", 10), Ranged::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 10), Ranged::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), Ranged::Unsatisfiable);
        assert_eq!(
            parse_range("bytes=99999999999999999999999-", 10),
            Ranged::Unsatisfiable
        );
        assert_eq!(parse_range("bytes=-5", 0), Ranged::Full);
        assert_eq!(
            parse_range("bytes=5-2", 10),
            Ranged::Full,
            "invalid: ignored"
        );
        assert_eq!(
            parse_range("bytes=0-1,4-5", 10),
            Ranged::Full,
            "several ranges: whole file"
        );
        assert_eq!(parse_range("items=0-1", 10), Ranged::Full);
        assert_eq!(parse_range("bytes=a-b", 10), Ranged::Full);
        assert_eq!(parse_range("bytes=1", 10), Ranged::Full);
    }

    #[test]
    fn etags_match_weakly() {
        let mut h = HeaderMap::new();
        assert!(!none_match(&h, "\"abc\""));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        assert!(none_match(&h, "\"abc\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(none_match(&h, "\"abc\""));
    }

    #[test]
    fn dispositions_are_safe() {
        assert_eq!(
            disposition("dir/report \"q\".pdf", "id"),
            "attachment; filename=\"report _q_.pdf\"; filename*=UTF-8''report%20%22q%22.pdf"
        );
        assert_eq!(
            disposition("ü.txt", "id"),
            "attachment; filename=\"_.txt\"; filename*=UTF-8''%C3%BC.txt"
        );
        assert_eq!(
            disposition("a/..", "abc"),
            "attachment; filename=\"abc\"; filename*=UTF-8''abc"
        );
    }
}
