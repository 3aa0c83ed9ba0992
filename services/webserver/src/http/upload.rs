//! `POST /upload`: a multipart form (`file`, and optional `name`, `replicas`,
//! `overwrite`) streamed to a spool file on disk, piece by piece as it arrives, then
//! stored with the same client library as `shoal put` (the tracker picks the peers).
//! Memory stays bounded whatever the file size; the spool file is removed whatever
//! happens, including a client that goes away.
//!
//! Why a spool and not a stream to the peers: a file's id (the BLAKE3 of the whole
//! content) is part of placement (`PlaceChunks`), so the whole file is read before
//! any chunk is placed. The spool is bounded instead: every byte written reserves
//! a byte of `SHOAL_UPLOAD_SPOOL_BYTES` until the upload is stored, so the uploads
//! in flight never fill the spool volume (on Kubernetes an emptyDir over its
//! `sizeLimit` evicts the pod). An upload larger than the limit gets 413 naming it
//! (before its body is read when it declares a length); one that finds the spool
//! full of other uploads gets 503 and may retry.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{Multipart, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use shoal_client::{PutOptions, Quiet};
use shoal_common::names;
use tokio::io::AsyncWriteExt;

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

/// The spooled file part; the spool file is removed when this is dropped.
pub struct Spooled {
    path: tempfile::TempPath,
    file_name: Option<String>,
    /// Bytes in the spool file.
    pub size: u64,
    /// The spool space this file holds, given back when it is dropped (after the file).
    _reserved: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Spooled {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Where a form's file part is spooled and how much it may take: in the handler the
/// state's `upload_dir`, upload limit and spool semaphore; in tests and the fuzz target
/// a temp dir and a small spool.
pub struct Spool<'a> {
    pub dir: &'a Path,
    /// Largest file part accepted (413 past it).
    pub limit: u64,
    /// Spool space, one permit per byte (`AppState::spool`).
    pub space: &'a Arc<tokio::sync::Semaphore>,
    /// What `space` holds when no upload is in flight (`SHOAL_UPLOAD_SPOOL_BYTES`), for the 503.
    pub space_bytes: u64,
    pub metrics: &'a Metrics,
}

/// A form read to its end and checked: what to store and under which name.
pub struct UploadForm {
    /// Checked with `names::validate`: the `name` field, else the file part's file name.
    pub name: String,
    pub replicas: u32,
    pub overwrite: bool,
    pub file: Spooled,
}

fn too_large(limit: u64) -> AppError {
    AppError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "This upload is larger than the webserver accepts: at most {limit} bytes ({:.1} MiB) per upload (SHOAL_UPLOAD_SPOOL_BYTES, SHOAL_MAX_UPLOAD_BYTES). Use `shoal put` for bigger files.",
            limit as f64 / (1024.0 * 1024.0)
        ),
    )
}

fn spool_full(space_bytes: u64) -> AppError {
    AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "The upload spool is full: uploads in flight hold its {space_bytes} bytes (SHOAL_UPLOAD_SPOOL_BYTES). Try again when they are stored.",
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

fn io_error(what: &str, dir: &std::path::Path, e: std::io::Error) -> AppError {
    tracing::warn!(dir = %dir.display(), error = %e, "{what}");
    AppError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("{what} in {}: {e}", dir.display()),
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

/// Write a file field to a new spool file in `to.dir`, as it arrives.
async fn spool(to: &Spool<'_>, mut field: Field<'_>) -> Result<Spooled, AppError> {
    let file_name = field.file_name().map(str::to_string);
    let dir = to.dir;
    let dir_owned = dir.to_path_buf();
    let tmp = tokio::task::spawn_blocking(move || {
        tempfile::Builder::new()
            .prefix(".shoal-upload-")
            .tempfile_in(&dir_owned)
    })
    .await
    .map_err(|e| {
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("spool task: {e}"),
        )
    })?
    .map_err(|e| io_error("cannot create an upload spool file", dir, e))?;
    let (std_file, path) = tmp.into_parts();
    let mut out = tokio::fs::File::from_std(std_file);
    let mut size = 0u64;
    let limit = to.limit;
    let mut reserved: Option<tokio::sync::OwnedSemaphorePermit> = None;
    while let Some(piece) = field.chunk().await.map_err(bad_multipart)? {
        if size + piece.len() as u64 > limit {
            return Err(too_large(limit));
        }
        // Pieces are small (a few KiB to a few MiB), far below u32::MAX permits.
        let n = u32::try_from(piece.len()).map_err(|_| too_large(limit))?;
        let permit = to
            .space
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| spool_full(to.space_bytes))?;
        match reserved.as_mut() {
            Some(r) => r.merge(permit),
            None => reserved = Some(permit),
        }
        out.write_all(&piece)
            .await
            .map_err(|e| io_error("cannot write the upload spool file", dir, e))?;
        size += piece.len() as u64;
        to.metrics.uploaded_bytes.inc_by(piece.len() as u64);
    }
    out.flush()
        .await
        .map_err(|e| io_error("cannot write the upload spool file", dir, e))?;
    Ok(Spooled {
        path,
        file_name,
        size,
        _reserved: reserved,
    })
}

pub async fn upload(
    State(st): Shared,
    headers: HeaderMap,
    mut form: Multipart,
) -> Result<Response, AppError> {
    // A declared length over the limit is refused before a byte is spooled.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = st.cfg.upload_limit();
    let r = match declared {
        Some(len) if len > limit.saturating_add(FORM_SLACK) => Err(too_large(limit)),
        _ => receive_and_store(&st, &mut form).await,
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

/// Read a whole upload form, spooling its file part, and check it as the handler
/// does: the `name` field (or the file name) is a valid name, `replicas` a number, a
/// file was chosen. The spool file and its space are given back when the result (or
/// the error) is dropped. The fuzz target `upload_form` drives this with any body.
pub async fn read_form(form: &mut Multipart, to: &Spool<'_>) -> Result<UploadForm, AppError> {
    let (mut name, mut replicas, mut overwrite) = (None::<String>, 0u32, false);
    let mut spooled: Option<Spooled> = None;
    while let Some(field) = form.next_field().await.map_err(bad_multipart)? {
        match field.name().unwrap_or("") {
            "file" if spooled.is_none() => spooled = Some(spool(to, field).await?),
            "name" => {
                let n = small_text(field).await?;
                let n = n.trim();
                if !n.is_empty() {
                    // Fields before the file (as the web form sends them) fail fast.
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
                        AppError::bad_request(format!("replicas must be a whole number, not {v:?}"))
                    })?
                };
            }
            "overwrite" => {
                overwrite = matches!(small_text(field).await?.trim(), "on" | "1" | "true" | "yes")
            }
            // Unknown fields (and a second file) are read and dropped.
            _ => {
                let mut field = field;
                while field.chunk().await.map_err(bad_multipart)?.is_some() {}
            }
        }
    }
    let Some(file) = spooled else {
        return Err(AppError::bad_request(
            "The form has no file: choose one to upload.",
        ));
    };
    // A browser sends an empty part with no file name when no file was chosen.
    if file.size == 0 && file.file_name.as_deref().unwrap_or("").is_empty() {
        return Err(AppError::bad_request("No file was chosen."));
    }
    let name = match name {
        Some(n) => n,
        None => file
            .file_name
            .as_deref()
            .and_then(names::local_file_name)
            .ok_or_else(|| AppError::bad_request("The file part has no file name: give a name."))?,
    };
    check_name(&name)?;

    Ok(UploadForm {
        name,
        replicas,
        overwrite,
        file,
    })
}

async fn receive_and_store(
    st: &Arc<crate::AppState>,
    form: &mut Multipart,
) -> Result<Response, AppError> {
    let dir: PathBuf = st.cfg.upload_dir.clone().unwrap_or_else(std::env::temp_dir);
    let to = Spool {
        dir: &dir,
        limit: st.cfg.upload_limit(),
        space: &st.spool,
        space_bytes: st.cfg.upload_spool_bytes,
        metrics: &st.metrics,
    };
    let UploadForm {
        name,
        replicas,
        overwrite,
        file,
    } = read_form(form, &to).await?;

    tracing::info!(name = %name, size = file.size, replicas, overwrite, "upload received; storing");
    let opts = PutOptions {
        name: name.clone(),
        replicas,
        overwrite,
    };
    let stored = st.client.put(&file.path, opts, Arc::new(Quiet)).await.map_err(|e| {
        let mut err = AppError::from(e);
        if err.status == StatusCode::CONFLICT && !overwrite {
            err.message = format!("A different file named “{name}” already exists. Tick “Replace a different file of the same name” to overwrite it. ({})", err.message);
        }
        err
    })?;
    drop(file);
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

    async fn read(
        body: &'static str,
        limit: u64,
    ) -> (Result<UploadForm, AppError>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let space = Arc::new(tokio::sync::Semaphore::new(1 << 20));
        let metrics = Metrics::default();
        let to = Spool {
            dir: dir.path(),
            limit,
            space: &space,
            space_bytes: 1 << 20,
            metrics: &metrics,
        };
        let mut m = Multipart::from_request(form(body), &())
            .await
            .expect("multipart");
        (read_form(&mut m, &to).await, dir)
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
        let (r, dir) = read(body, 1 << 20).await;
        let up = r.expect("accepted");
        assert_eq!(
            (up.name.as_str(), up.replicas, up.file.size),
            ("docs/a.txt", 2, 5)
        );
        assert_eq!(std::fs::read(up.file.path()).expect("spooled"), b"hello");
        drop(up);
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[tokio::test]
    async fn the_file_name_is_used_without_its_directories_and_limits_hold() {
        let body = "--XyZ
Content-Disposition: form-data; name=\"file\"; filename=\"../up.bin\"

hello
--XyZ--
";
        let (r, _dir) = read(body, 1 << 20).await;
        assert_eq!(r.expect("accepted").name, "up.bin");
        let (r, dir) = read(body, 4).await;
        assert_eq!(
            r.err().map(|e| e.status),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }
}
