//! `POST /upload`: a multipart form (`name`, `replicas`, `overwrite`, then `file`)
//! stored as it arrives: the file part streams through the client library's streaming
//! put (the tracker picks the peers, window by window), and nothing is written to the
//! webserver's disk. Its memory is bounded: chunk buffers come from
//! `SHOAL_UPLOAD_BUFFER_BYTES`, shared by every upload in flight (an upload waits for
//! room before it reads its next chunk; a chunk's room is given back once it is
//! durable).
//!
//! Why streaming and not a spool: a spool must hold the whole file (its id is the
//! BLAKE3 of all of it), so the webserver's disk would bound the largest upload and
//! uploads in flight could fill it (on Kubernetes an emptyDir over its `sizeLimit`
//! evicts the pod). A streaming upload places each chunk as it is hashed and names the
//! content id at the commit. The cost: the form's fields must come before the file
//! part (the web form sends them so; a field after the file is refused and the upload
//! aborted), and a stream cannot be deduplicated as a whole before it is sent (chunks
//! already stored are skipped one by one).
//!
//! An upload over `SHOAL_MAX_UPLOAD_BYTES` gets 413 naming it: before its body is read
//! when it declares a length, else as soon as it passes the limit.

use std::sync::{Arc, Mutex};

use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{Multipart, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use futures::StreamExt;
use shoal_client::{Client, PutOptions, StreamMemory, Streamed};
use shoal_common::names;

use super::html::file_href;
use super::{AppError, Shared};
use crate::metrics::Metrics;

/// Longest text field accepted (a name is at most 255 bytes).
const MAX_TEXT_FIELD: usize = 1024;

/// Room for the form around the file (boundaries, part headers, the text fields) in a
/// request whose declared length is checked against the upload limit.
pub const FORM_SLACK: u64 = 64 << 10;

/// After an error, at most this much of the rest of the request body is read and
/// discarded (within [`DRAIN_TIME`]), so the client reads the answer (a 413 naming the
/// limit) instead of a connection reset while it is still sending.
pub const DRAIN_BYTES: u64 = 256 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(60);

/// Where a form's file part goes: the peers (the handler), or memory (tests and the
/// fuzz target, which check the form's reading, limits and errors on small bodies).
pub enum Sink<'a> {
    Peers {
        client: &'a Client,
        memory: &'a StreamMemory,
    },
    Memory,
}

/// How a form is read: the most its file may hold, where it goes, what is counted.
pub struct Reading<'a> {
    /// Largest file part accepted (413 past it).
    pub limit: u64,
    /// The most the file part can hold (the body's declared length, else `limit`): the
    /// tracker fragments a stream by it.
    pub most: u64,
    pub sink: Sink<'a>,
    pub metrics: &'a Metrics,
}

/// A form read to its end and checked: what was stored, under which name.
pub struct UploadForm {
    /// Checked with `names::validate`: the `name` field, else the file part's file name.
    pub name: String,
    pub replicas: u32,
    pub overwrite: bool,
    /// Bytes in the file part.
    pub size: u64,
    /// The stored stream, to commit (`Sink::Peers`).
    pub stored: Option<Streamed>,
    /// The file's bytes (`Sink::Memory`).
    pub kept: Option<Vec<u8>>,
}

fn too_large(limit: u64) -> AppError {
    AppError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "This upload is larger than the webserver accepts: at most {limit} bytes ({:.1} MiB) per upload (SHOAL_MAX_UPLOAD_BYTES). Use `shoal put` for bigger files.",
            limit as f64 / (1024.0 * 1024.0)
        ),
    )
}

fn bad_multipart(e: MultipartError) -> AppError {
    if crate::idle::is_body_timeout(&e) {
        return AppError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the upload stalled: {}", e.body_text()),
        );
    }
    let status = e.status();
    let status = if status.is_server_error() {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    AppError::new(
        status,
        format!("could not read the upload: {}", e.body_text()),
    )
}

/// A short text field, refused when it is longer than a name can be.
async fn small_text(mut field: Field<'_>) -> Result<String, AppError> {
    let mut buf = Vec::new();
    while let Some(piece) = field.chunk().await.map_err(bad_multipart)? {
        if buf.len() + piece.len() > MAX_TEXT_FIELD {
            return Err(AppError::bad_request(format!(
                "form field {:?} is longer than {MAX_TEXT_FIELD} bytes",
                field.name().unwrap_or("")
            )));
        }
        buf.extend_from_slice(&piece);
    }
    String::from_utf8(buf).map_err(|_| AppError::bad_request("form fields must be UTF-8"))
}

fn check_name(name: &str) -> Result<(), AppError> {
    names::validate(name).map_err(|e| AppError::bad_request(format!("Bad file name: {e}.")))
}

pub async fn upload(
    State(st): Shared,
    headers: HeaderMap,
    mut form: Multipart,
) -> Result<Response, AppError> {
    // A declared length over the limit is refused before a byte is read.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = st.cfg.max_upload_bytes;
    let r = match declared {
        Some(len) if len > limit.saturating_add(FORM_SLACK) => Err(too_large(limit)),
        _ => receive_and_store(&st, &mut form, declared.map_or(limit, |d| d.min(limit))).await,
    };
    if r.is_err() {
        let _ = tokio::time::timeout(DRAIN_TIME, drain(&mut form)).await;
    }
    if r.is_err() {
        st.metrics.upload_failures.inc();
    }
    r
}

/// Read and drop what is left of the form, up to [`DRAIN_BYTES`]; nothing is kept.
pub async fn drain(form: &mut Multipart) {
    let mut left = DRAIN_BYTES;
    while let Ok(Some(mut field)) = form.next_field().await {
        while let Ok(Some(piece)) = field.chunk().await {
            left = left.saturating_sub(piece.len() as u64);
            if left == 0 {
                return;
            }
        }
    }
}

/// What the file part's reader saw, for the handler's answer when the put fails.
#[derive(Default)]
struct Seen {
    bytes: u64,
    too_large: bool,
    error: Option<AppError>,
}

/// The file part as a reader: counted, cut at `limit`, its multipart errors kept.
fn part_reader<'f>(
    first: Bytes,
    field: Field<'f>,
    limit: u64,
    seen: Arc<Mutex<Seen>>,
    metrics: &'f Metrics,
) -> impl tokio::io::AsyncRead + Unpin + Send + 'f {
    let pieces = futures::stream::once(async move { Ok(first) })
        .chain(field)
        .map(move |piece| {
            let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
            match piece {
                Ok(b) => {
                    s.bytes += b.len() as u64;
                    if s.bytes > limit {
                        s.too_large = true;
                        return Err(std::io::Error::other("the upload is over the limit"));
                    }
                    metrics.uploaded_bytes.inc_by(b.len() as u64);
                    Ok(b)
                }
                Err(e) => {
                    let msg = e.body_text();
                    s.error = Some(bad_multipart(e));
                    Err(std::io::Error::other(msg))
                }
            }
        });
    tokio_util::io::StreamReader::new(Box::pin(pieces))
}

/// Store the file part through `to.sink` as it arrives.
async fn store_part(
    to: &Reading<'_>,
    mut field: Field<'_>,
    opts: PutOptions,
) -> Result<(u64, Part), AppError> {
    let no_file_name = field.file_name().unwrap_or("").is_empty();
    let first = field.chunk().await.map_err(bad_multipart)?;
    // A browser sends an empty part with no file name when no file was chosen.
    let Some(first) = first
        .filter(|f| !f.is_empty())
        .or_else(|| (!no_file_name).then(Bytes::new))
    else {
        while field.chunk().await.map_err(bad_multipart)?.is_some() {}
        return Err(AppError::bad_request("No file was chosen."));
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut reader = part_reader(first, field, to.limit, seen.clone(), to.metrics);
    let stored = match &to.sink {
        Sink::Peers { client, memory } => {
            match client.put_stream(&mut reader, to.most, opts, memory).await {
                Ok(s) => s,
                Err(e) => {
                    // The reader's own failure (over the limit, a broken form) first.
                    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                    if s.too_large {
                        return Err(too_large(to.limit));
                    }
                    return Err(s.error.take().unwrap_or_else(|| AppError::from(e)));
                }
            }
        }
        Sink::Memory => {
            let mut kept = Vec::new();
            let copied = tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut kept).await;
            let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
            if s.too_large {
                return Err(too_large(to.limit));
            }
            if let Some(err) = s.error.take() {
                return Err(err);
            }
            copied.map_err(|e| AppError::bad_request(format!("could not read the upload: {e}")))?;
            return Ok((kept.len() as u64, Part::Kept(kept)));
        }
    };
    let size = seen.lock().unwrap_or_else(|p| p.into_inner()).bytes;
    Ok((size, Part::Stored(stored)))
}

/// What became of the file part.
enum Part {
    Stored(Streamed),
    Kept(Vec<u8>),
}

/// Read a whole upload form and check it as the handler does: the `name` field (or the
/// file name) is a valid name, `replicas` a number, a file was chosen, and no field
/// comes after the file (it is stored as it arrives: its name and replica count are
/// fixed when it begins). On an error the stored stream is aborted. The fuzz target
/// `upload_form` drives this with any body.
pub async fn read_form(form: &mut Multipart, to: &Reading<'_>) -> Result<UploadForm, AppError> {
    match read_fields(form, to).await {
        Ok(f) => Ok(f),
        Err((e, stored)) => {
            if let (Some(s), Sink::Peers { client, .. }) = (stored, &to.sink) {
                s.abort(client).await;
            }
            Err(e)
        }
    }
}

type FormError = (AppError, Option<Streamed>);

fn stored(file: Option<(String, u64, Part)>) -> Option<Streamed> {
    match file {
        Some((_, _, Part::Stored(s))) => Some(s),
        _ => None,
    }
}

async fn read_fields(form: &mut Multipart, to: &Reading<'_>) -> Result<UploadForm, FormError> {
    let (mut name, mut replicas, mut overwrite) = (None::<String>, 0u32, false);
    let mut file: Option<(String, u64, Part)> = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err((bad_multipart(e), stored(file))),
        };
        let field_name = field.name().unwrap_or("").to_string();
        if file.is_some() && matches!(field_name.as_str(), "name" | "replicas" | "overwrite") {
            return Err((
                AppError::bad_request(format!(
                    "form field {field_name:?} comes after the file: send name, replicas and overwrite before the file part (the file is stored as it arrives)"
                )),
                stored(file),
            ));
        }
        let r: Result<(), AppError> = async {
            match field_name.as_str() {
                "file" if file.is_none() => {
                    let n = match name.clone() {
                        Some(n) => n,
                        None => field
                            .file_name()
                            .and_then(names::local_file_name)
                            .ok_or_else(|| {
                                AppError::bad_request(
                                    "The file part has no file name: give a name.",
                                )
                            })?,
                    };
                    check_name(&n)?;
                    let opts = PutOptions {
                        name: n.clone(),
                        replicas,
                        overwrite,
                    };
                    let (size, stored) = store_part(to, field, opts).await?;
                    file = Some((n, size, stored));
                }
                "name" => {
                    let n = small_text(field).await?;
                    let n = n.trim();
                    if !n.is_empty() {
                        check_name(n)?;
                        name = Some(n.to_string());
                    }
                }
                "replicas" => {
                    let v = small_text(field).await?;
                    let v = v.trim();
                    replicas = if v.is_empty() {
                        0
                    } else {
                        v.parse().map_err(|_| {
                            AppError::bad_request(format!(
                                "replicas must be a whole number, not {v:?}"
                            ))
                        })?
                    };
                }
                "overwrite" => {
                    overwrite =
                        matches!(small_text(field).await?.trim(), "on" | "1" | "true" | "yes")
                }
                // Unknown fields (and a second file) are read and dropped.
                _ => {
                    let mut field = field;
                    while field.chunk().await.map_err(bad_multipart)?.is_some() {}
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            return Err((e, stored(file)));
        }
    }
    let Some((name, size, part)) = file else {
        return Err((
            AppError::bad_request("The form has no file: choose one to upload."),
            None,
        ));
    };
    let (stored, kept) = match part {
        Part::Stored(s) => (Some(s), None),
        Part::Kept(k) => (None, Some(k)),
    };
    Ok(UploadForm {
        name,
        replicas,
        overwrite,
        size,
        stored,
        kept,
    })
}

async fn receive_and_store(
    st: &Arc<crate::AppState>,
    form: &mut Multipart,
    most: u64,
) -> Result<Response, AppError> {
    let to = Reading {
        limit: st.cfg.max_upload_bytes,
        most,
        sink: Sink::Peers {
            client: &st.client,
            memory: &st.upload_memory,
        },
        metrics: &st.metrics,
    };
    let UploadForm {
        name,
        replicas,
        overwrite,
        size,
        stored,
        ..
    } = read_form(form, &to).await?;
    let stored = stored.ok_or_else(|| {
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the upload was not stored",
        )
    })?;
    tracing::info!(name = %name, size, replicas, overwrite, "upload received; committing");
    let stored = stored.commit(&st.client).await.map_err(|e| {
        let mut err = AppError::from(e);
        if err.status == StatusCode::CONFLICT && !overwrite {
            err.message = format!("A different file named “{name}” already exists. Tick “Replace a different file of the same name” to overwrite it. ({})", err.message);
        }
        err
    })?;
    st.metrics.uploads.inc();
    tracing::info!(name = %name, id = %stored.id, chunks = stored.chunks, deduplicated = stored.deduplicated, "upload stored");
    let flag = if stored.deduplicated { "dedup" } else { "1" };
    Ok(Redirect::to(&format!("{}?uploaded={flag}", file_href(&name))).into_response())
}

#[cfg(test)]
mod tests {
    use axum::extract::{FromRequest, Request};

    use super::*;

    fn form(body: &'static str) -> Request {
        Request::builder()
            .method("POST")
            .header(header::CONTENT_TYPE, "multipart/form-data; boundary=XyZ")
            .body(axum::body::Body::from(body.replace('\n', "\r\n")))
            .expect("valid request")
    }

    async fn read(body: &'static str, limit: u64) -> Result<UploadForm, AppError> {
        let metrics = Metrics::default();
        let to = Reading {
            limit,
            most: limit,
            sink: Sink::Memory,
            metrics: &metrics,
        };
        let mut m = Multipart::from_request(form(body), &())
            .await
            .expect("multipart");
        read_form(&mut m, &to).await
    }

    #[tokio::test]
    async fn a_form_is_read_and_its_name_field_wins() {
        let body = "--XyZ
Content-Disposition: form-data; name=\"name\"

 docs/a.txt 
--XyZ
Content-Disposition: form-data; name=\"replicas\"

2
--XyZ
Content-Disposition: form-data; name=\"file\"; filename=\"../up.bin\"
Content-Type: application/octet-stream

hello
--XyZ--
";
        let up = read(body, 1 << 20).await.expect("accepted");
        assert_eq!(
            (up.name.as_str(), up.replicas, up.size),
            ("docs/a.txt", 2, 5)
        );
        assert_eq!(up.kept.as_deref(), Some(&b"hello"[..]));
    }

    #[tokio::test]
    async fn the_file_name_is_used_without_its_directories_and_limits_hold() {
        let body = "--XyZ
Content-Disposition: form-data; name=\"file\"; filename=\"../up.bin\"

hello
--XyZ--
";
        assert_eq!(read(body, 1 << 20).await.expect("accepted").name, "up.bin");
        assert_eq!(
            read(body, 4).await.err().map(|e| e.status),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
    }

    #[tokio::test]
    async fn a_field_after_the_file_or_no_file_chosen_is_refused() {
        let late = "--XyZ
Content-Disposition: form-data; name=\"file\"; filename=\"a.bin\"

hello
--XyZ
Content-Disposition: form-data; name=\"replicas\"

2
--XyZ--
";
        let e = read(late, 1 << 20).await.err().expect("refused");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("comes after the file"), "{}", e.message);
        let none = "--XyZ
Content-Disposition: form-data; name=\"name\"

a.bin
--XyZ
Content-Disposition: form-data; name=\"file\"; filename=\"\"


--XyZ--
";
        let e = read(none, 1 << 20).await.err().expect("refused");
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::BAD_REQUEST, "No file was chosen.")
        );
    }
}
