//! `POST /upload` bodies as the webserver reads them: any bytes (or a form built from
//! parts), under a content type with any boundary, delivered in pieces of any size,
//! through axum's `Multipart` extractor and `http::upload::read_form` — the code the
//! handler runs, here with the file part kept in memory instead of streamed to the
//! peers — then `drain`, as the handler does after an error.
//!
//! Invariants: nothing panics; an accepted form read a contiguous piece of the body as
//! its file (never more bytes than the body has, never more than the limit) under a
//! name that `names::validate` accepts; refusals are 400, 413 or 503, never a server
//! error; a plain honest form is accepted with exactly its file's bytes.
#![no_main]

use std::convert::Infallible;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, StatusCode};
use libfuzzer_sys::fuzz_target;
use shoal_common::names::{self, MAX_NAME_BYTES};
use shoal_webserver::http::upload::{drain, read_form, Reading, Sink};
use shoal_webserver::metrics::Metrics;

/// The upload limit when the input does not pick a small one.
const BIG: u64 = 1 << 20;

#[derive(Arbitrary, Debug)]
enum ContentType {
    /// `multipart/form-data; boundary=<b>`.
    Boundary(String),
    /// `multipart/form-data; boundary="<b>"`.
    Quoted(String),
    /// Any header value at all.
    Raw(Vec<u8>),
    Missing,
}

#[derive(Arbitrary, Debug)]
enum FieldName {
    File,
    Name,
    Replicas,
    Overwrite,
    Other(String),
    /// No `name` parameter.
    Absent,
}

#[derive(Arbitrary, Debug)]
struct Part {
    field: FieldName,
    file_name: Option<String>,
    /// Extra header lines (`Content-Type: …`, junk).
    extra: Vec<u8>,
    content: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Shape {
    /// The body as given.
    Raw(Vec<u8>),
    /// Parts framed with the content type's boundary; `close` adds the final
    /// delimiter, `tail` is appended after it (epilogue, or a truncated mess).
    Form {
        preamble: Vec<u8>,
        parts: Vec<Part>,
        close: bool,
        tail: Vec<u8>,
    },
    /// What a browser sends for one chosen file: must be accepted.
    Honest { file_name: u8, content: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
struct Input {
    content_type: ContentType,
    shape: Shape,
    /// Sizes of the pieces the body arrives in (the rest in one piece).
    pieces: Vec<u16>,
    /// The upload limit, small when set.
    limit: Option<u16>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::default)
}

fn frame(boundary: &str, preamble: &[u8], parts: &[Part], close: bool, tail: &[u8]) -> Vec<u8> {
    let mut b = preamble.to_vec();
    for p in parts {
        b.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        b.extend_from_slice(b"Content-Disposition: form-data");
        let name = match &p.field {
            FieldName::File => Some("file"),
            FieldName::Name => Some("name"),
            FieldName::Replicas => Some("replicas"),
            FieldName::Overwrite => Some("overwrite"),
            FieldName::Other(s) => Some(s.as_str()),
            FieldName::Absent => None,
        };
        if let Some(n) = name {
            b.extend_from_slice(format!("; name=\"{n}\"").as_bytes());
        }
        if let Some(f) = &p.file_name {
            b.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
        }
        b.extend_from_slice(b"\r\n");
        b.extend_from_slice(&p.extra);
        b.extend_from_slice(b"\r\n");
        b.extend_from_slice(&p.content);
        b.extend_from_slice(b"\r\n");
    }
    if close {
        b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    }
    b.extend_from_slice(tail);
    b
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

fn split(body: &[u8], pieces: &[u16]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = body;
    for &n in pieces {
        if rest.is_empty() {
            break;
        }
        let n = (n as usize).clamp(1, rest.len());
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    if !rest.is_empty() {
        out.push(rest.to_vec());
    }
    out
}

fuzz_target!(|input: Input| {
    let (content_type, body, honest): (Option<Vec<u8>>, Vec<u8>, Option<(String, Vec<u8>)>) =
        match input.shape {
            Shape::Honest { file_name, content } => {
                let boundary = "----shoalfuzz7MA4YWxkTrZu0gW";
                let name = format!("f{}.bin", file_name);
                let part = Part {
                    field: FieldName::File,
                    file_name: Some(name.clone()),
                    extra: b"Content-Type: application/octet-stream\r\n".to_vec(),
                    content: content.clone(),
                };
                let body = frame(boundary, b"", &[part], true, b"");
                let ct = format!("multipart/form-data; boundary={boundary}").into_bytes();
                // Content holding the delimiter is not what a browser sends (it picks
                // a boundary the file does not contain).
                let delimiter = format!("\r\n--{boundary}");
                let ok = !contains(&content, delimiter.as_bytes());
                (Some(ct), body, ok.then_some((name, content)))
            }
            Shape::Raw(body) => {
                let ct = match input.content_type {
                    ContentType::Boundary(b) => {
                        Some(format!("multipart/form-data; boundary={b}").into_bytes())
                    }
                    ContentType::Quoted(b) => {
                        Some(format!("multipart/form-data; boundary=\"{b}\"").into_bytes())
                    }
                    ContentType::Raw(v) => Some(v),
                    ContentType::Missing => None,
                };
                (ct, body, None)
            }
            Shape::Form {
                preamble,
                parts,
                close,
                tail,
            } => {
                let (ct, boundary) = match input.content_type {
                    ContentType::Boundary(b) => {
                        (format!("multipart/form-data; boundary={b}").into_bytes(), b)
                    }
                    ContentType::Quoted(b) => (
                        format!("multipart/form-data; boundary=\"{b}\"").into_bytes(),
                        b,
                    ),
                    ContentType::Raw(v) => (v, "x".into()),
                    ContentType::Missing => {
                        (b"multipart/form-data; boundary=x".to_vec(), "x".into())
                    }
                };
                (
                    Some(ct),
                    frame(&boundary, &preamble, &parts, close, &tail),
                    None,
                )
            }
        };

    let limit = input.limit.map_or(BIG, u64::from);
    let limit = if honest.is_some() { BIG } else { limit };
    let to = Reading {
        limit,
        most: limit,
        sink: Sink::Memory,
        metrics: metrics(),
    };

    let mut req = Request::builder().method("POST").uri("/upload");
    if let Some(ct) = &content_type {
        match axum::http::HeaderValue::from_bytes(ct) {
            Ok(v) => req = req.header(header::CONTENT_TYPE, v),
            // hyper refuses such a request before any handler runs.
            Err(_) => return,
        }
    }
    let chunks = split(&body, &input.pieces);
    let stream = futures::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, Infallible>(bytes::Bytes::from(c))),
    );
    let req = req
        .body(Body::from_stream(stream))
        .expect("a request from valid parts");

    runtime().block_on(async {
        // The extractor refuses a content type that is not multipart with a boundary;
        // axum answers that itself.
        let Ok(mut form) = Multipart::from_request(req, &()).await else {
            assert!(honest.is_none(), "an honest form's content type refused");
            return;
        };
        match read_form(&mut form, &to).await {
            Ok(up) => {
                let size = up.size;
                assert!(
                    size <= body.len() as u64,
                    "{size} bytes read from a {}-byte body",
                    body.len()
                );
                assert!(size <= limit, "{size} bytes read past the limit {limit}");
                let kept = up.kept.expect("the file part is kept");
                assert_eq!(kept.len() as u64, size, "file part size");
                assert!(
                    contains(&body, &kept),
                    "the file part's bytes are not a piece of the body"
                );
                assert!(names::validate(&up.name).is_ok(), "name {:?}", up.name);
                assert!(up.name.len() <= MAX_NAME_BYTES, "name {:?}", up.name);
                assert_eq!(up.name.trim(), up.name, "untrimmed name");
                if let Some((name, content)) = &honest {
                    assert_eq!(&up.name, name);
                    assert_eq!(&kept, content, "an honest file's bytes changed");
                    assert!(!up.overwrite && up.replicas == 0);
                }
            }
            Err(e) => {
                assert!(
                    matches!(
                        e.status,
                        StatusCode::BAD_REQUEST
                            | StatusCode::PAYLOAD_TOO_LARGE
                            | StatusCode::SERVICE_UNAVAILABLE
                    ),
                    "refused with {}: {}",
                    e.status,
                    e.message
                );
                assert!(
                    honest.is_none(),
                    "an honest form refused: {} {}",
                    e.status,
                    e.message
                );
                drain(&mut form).await;
            }
        }
    });
});
