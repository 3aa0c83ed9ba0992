//! Bad input to the webserver: its gRPC entry point and the HTTP gateway (Range
//! headers, uploads with bad names or bodies, tokens, paths).

use reqwest::multipart::{Form, Part};
use shoal_proto::v1 as pb;
use tonic::Code;

use super::harness::{case, code, Answer, Case, Ctx, Outcome, READ, WRITE};

/// GET `path` with the read token and extra headers; checks a 200/206 body against
/// the expected bytes of `small.txt` when `check` is set.
async fn get(c: &Ctx, path: &str, token: Option<&str>, headers: &[(&str, String)]) -> Answer {
    let mut req = c.http.get(format!("{}{path}", c.base()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let r = req.send().await.map_err(|e| format!("GET {path}: {e}"))?;
    Ok(Outcome::Http(r.status().as_u16()))
}

/// Download `name` with a `Range` header; a 200 must carry the whole file and a 206
/// exactly the range it announces.
async fn ranged(c: &Ctx, name: &str, range: &str) -> Answer {
    let f = c.file(name);
    let r = c
        .http
        .get(format!("{}/download/{name}", c.base()))
        .bearer_auth(READ)
        .header("range", range)
        .send()
        .await
        .map_err(|e| format!("GET: {e}"))?;
    let status = r.status().as_u16();
    let content_range = r
        .headers()
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = r.bytes().await.map_err(|e| format!("body: {e}"))?;
    let whole = std::fs::read(c.work.path().join(format!("src-{name}")))
        .map_err(|e| format!("source of {name}: {e}"))?;
    let want_416 = format!("bytes */{}", f.size);
    match status {
        200 if body[..] != whole[..] => {
            return Err(format!(
                "200 with {} bytes that are not the file",
                body.len()
            ));
        }
        206 => {
            let cr = content_range.ok_or("206 without Content-Range")?;
            let (a, b) = cr
                .strip_prefix("bytes ")
                .and_then(|s| s.split_once('/'))
                .and_then(|(r, _)| r.split_once('-'))
                .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
                .ok_or_else(|| format!("bad Content-Range {cr:?}"))?;
            if b < a || b >= whole.len() || body[..] != whole[a..=b] {
                return Err(format!(
                    "206 {cr} with {} bytes that are not that range",
                    body.len()
                ));
            }
        }
        416 if content_range.as_deref() != Some(want_416.as_str()) => {
            return Err(format!(
                "416 with Content-Range {content_range:?}, want {want_416}"
            ));
        }
        _ => {}
    }
    Ok(Outcome::Http(status))
}

/// POST the web UI's confirmed delete form for `name`.
async fn delete(c: &Ctx, name: &str, token: &str, origin: Option<&str>) -> Answer {
    let mut req = c
        .http
        .post(format!("{}/files/{name}/delete", c.base()))
        .bearer_auth(token)
        .header("content-type", FORM)
        .body("confirm=yes");
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    let r = req.send().await.map_err(|e| format!("POST: {e}"))?;
    Ok(Outcome::Http(r.status().as_u16()))
}

/// POST a multipart form to `/upload`.
async fn upload(c: &Ctx, token: Option<&str>, form: Form) -> Answer {
    let mut req = c.http.post(format!("{}/upload", c.base())).multipart(form);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.map_err(|e| format!("POST: {e}"))?;
    Ok(Outcome::Http(r.status().as_u16()))
}

fn file(bytes: &[u8], name: &str) -> Part {
    Part::bytes(bytes.to_vec()).file_name(name.to_string())
}

/// After an upload that must fail, `name` is not in the catalogue.
async fn not_stored(c: &Ctx, name: &str) -> Result<(), String> {
    let r = c
        .tracker(Some(READ))
        .stat_file(pb::StatFileRequest {
            name_or_id: name.into(),
        })
        .await;
    match r {
        Err(s) if s.code() == Code::NotFound => Ok(()),
        Ok(_) => Err(format!("{name:?} was stored by a failed upload")),
        Err(s) => Err(format!("stat {name:?}: {s}")),
    }
}

const BAD_REQUEST: Outcome = Outcome::Http(400);
/// What the web UI's confirmation form posts.
const FORM: &str = "application/x-www-form-urlencoded";

pub fn cases() -> Vec<Case> {
    vec![
        // ---- webserver gRPC ---------------------------------------------------------
        case(
            "Webserver.Discover: no token",
            Outcome::Grpc(Code::Unauthenticated),
            |c| async move { code(c.webserver(None).discover(pb::DiscoverRequest {}).await) },
        ),
        case(
            "Webserver.SearchFiles: 10 KB query",
            Outcome::Grpc(Code::InvalidArgument),
            |c| async move {
                let query = "q".repeat(10 << 10);
                code(
                    c.webserver(Some(READ))
                        .search_files(pb::SearchFilesRequest {
                            query,
                            ..Default::default()
                        })
                        .await,
                )
            },
        ),
        case(
            "Webserver.ListFiles: page token not hex",
            Outcome::Grpc(Code::InvalidArgument),
            |c| async move {
                code(
                    c.webserver(Some(READ))
                        .list_files(pb::ListFilesRequest {
                            page_token: "not a token".into(),
                            page_size: 0,
                        })
                        .await,
                )
            },
        ),
        case(
            "Webserver.StatFile: unknown file id",
            Outcome::Grpc(Code::NotFound),
            |c| async move {
                let name_or_id = blake3::hash(b"nothing").to_hex().to_string();
                code(
                    c.webserver(Some(READ))
                        .stat_file(pb::StatFileRequest { name_or_id })
                        .await,
                )
            },
        ),
        // ---- Range ------------------------------------------------------------------------
        case(
            "HTTP Range: bytes=abc (ignored)",
            Outcome::Http(200),
            |c| async move { ranged(&c, "small.txt", "bytes=abc").await },
        ),
        case(
            "HTTP Range: bytes=5-2 (ignored)",
            Outcome::Http(200),
            |c| async move { ranged(&c, "small.txt", "bytes=5-2").await },
        ),
        case(
            "HTTP Range: bytes=999999999-",
            Outcome::Http(416),
            |c| async move { ranged(&c, "small.txt", "bytes=999999999-").await },
        ),
        case("HTTP Range: bytes=-0", Outcome::Http(416), |c| async move {
            ranged(&c, "small.txt", "bytes=-0").await
        }),
        case(
            "HTTP Range: 30-digit first byte",
            Outcome::Http(416),
            |c| async move { ranged(&c, "multi.bin", &format!("bytes={}-", "9".repeat(30))).await },
        ),
        case(
            "HTTP Range: several ranges (whole file)",
            Outcome::Http(200),
            |c| async move { ranged(&c, "small.txt", "bytes=0-1,5-9").await },
        ),
        case(
            "HTTP Range: other unit (ignored)",
            Outcome::Http(200),
            |c| async move { ranged(&c, "small.txt", "items=0-1").await },
        ),
        case(
            "HTTP Range: 8 KB of dashes",
            Outcome::Http(200),
            |c| async move { ranged(&c, "small.txt", &format!("bytes={}", "-".repeat(8 << 10))).await },
        ),
        case(
            "HTTP Range: bytes=0-0 of an empty file",
            Outcome::Http(416),
            |c| async move { ranged(&c, "empty", "bytes=0-0").await },
        ),
        case(
            "HTTP Range: suffix past a chunk end",
            Outcome::Http(206),
            |c| async move { ranged(&c, "multi.bin", "bytes=-70000").await },
        ),
        case(
            "HTTP If-None-Match: 4 KB of junk",
            Outcome::Http(200),
            |c| async move {
                get(
                    &c,
                    "/download/small.txt",
                    Some(READ),
                    &[("if-none-match", "x,".repeat(2 << 10))],
                )
                .await
            },
        ),
        // ---- names and paths --------------------------------------------------------------
        case(
            "HTTP download: unknown name",
            Outcome::Http(404),
            |c| async move { get(&c, "/download/no-such-file", Some(READ), &[]).await },
        ),
        case(
            "HTTP download: traversal path",
            Outcome::Http(404),
            |c| async move { get(&c, "/download/..%2F..%2Fetc%2Fpasswd", Some(READ), &[]).await },
        ),
        case(
            "HTTP download: NUL in the name",
            Outcome::Http(404),
            |c| async move { get(&c, "/download/a%00b", Some(READ), &[]).await },
        ),
        case(
            "HTTP download: 10 KB name",
            Outcome::Http(404),
            |c| async move {
                get(
                    &c,
                    &format!("/download/{}", "n".repeat(10 << 10)),
                    Some(READ),
                    &[],
                )
                .await
            },
        ),
        case(
            "HTTP API: unknown file",
            Outcome::Http(404),
            |c| async move { get(&c, "/api/v1/files/no-such-file", Some(READ), &[]).await },
        ),
        case("HTTP API: 10 KB search", BAD_REQUEST, |c| async move {
            get(
                &c,
                &format!("/api/v1/search?q={}", "q".repeat(10 << 10)),
                Some(READ),
                &[],
            )
            .await
        }),
        // ---- tokens -----------------------------------------------------------------------
        case("HTTP: no token", Outcome::Http(401), |c| async move {
            get(&c, "/download/small.txt", None, &[]).await
        }),
        case("HTTP: wrong token", Outcome::Http(401), |c| async move {
            get(
                &c,
                "/download/small.txt",
                Some("not-the-token-0123456789"),
                &[],
            )
            .await
        }),
        case("HTTP: wrong cookie", Outcome::Http(401), |c| async move {
            get(
                &c,
                "/api/v1/files",
                None,
                &[("cookie", "shoal_token=nope; other=1".into())],
            )
            .await
        }),
        case(
            "HTTP delete: read token",
            Outcome::Http(403),
            |c| async move { delete(&c, "small.txt", READ, None).await },
        ),
        case(
            "HTTP delete: from another site",
            Outcome::Http(403),
            |c| async move { delete(&c, "small.txt", WRITE, Some("http://evil.example")).await },
        ),
        case(
            "HTTP delete: unknown file",
            Outcome::Http(404),
            |c| async move { delete(&c, "no-such-file", WRITE, None).await },
        ),
        // ---- uploads ------------------------------------------------------------------------
        case(
            "HTTP upload: read token",
            Outcome::Http(403),
            |c| async move {
                let r = upload(
                    &c,
                    Some(READ),
                    Form::new().part("file", file(b"hello", "ro.txt")),
                )
                .await;
                not_stored(&c, "ro.txt").await?;
                r
            },
        ),
        case("HTTP upload: empty name", BAD_REQUEST, |c| async move {
            upload(
                &c,
                Some(WRITE),
                Form::new()
                    .text("name", "")
                    .part("file", file(b"hello", "")),
            )
            .await
        }),
        case(
            "HTTP upload: 10 KB name field",
            BAD_REQUEST,
            |c| async move {
                let name = "n".repeat(10 << 10);
                upload(
                    &c,
                    Some(WRITE),
                    Form::new()
                        .text("name", name)
                        .part("file", file(b"hello", "x")),
                )
                .await
            },
        ),
        case(
            "HTTP upload: 10 KB file name",
            BAD_REQUEST,
            |c| async move {
                let name = "n".repeat(10 << 10);
                upload(
                    &c,
                    Some(WRITE),
                    Form::new().part("file", file(b"hello", &name)),
                )
                .await
            },
        ),
        case(
            "HTTP upload: NUL in the name",
            BAD_REQUEST,
            |c| async move {
                let r = upload(
                    &c,
                    Some(WRITE),
                    Form::new()
                        .text("name", "a\0b")
                        .part("file", file(b"hello", "x")),
                )
                .await;
                not_stored(&c, "a\0b").await?;
                r
            },
        ),
        case("HTTP upload: no file part", BAD_REQUEST, |c| async move {
            upload(&c, Some(WRITE), Form::new().text("name", "nofile")).await
        }),
        case("HTTP upload: 1000 replicas", BAD_REQUEST, |c| async move {
            let r = upload(
                &c,
                Some(WRITE),
                Form::new()
                    .text("replicas", "1000")
                    .part("file", file(b"hello", "r1000.txt")),
            )
            .await;
            not_stored(&c, "r1000.txt").await?;
            r
        }),
        case("HTTP upload: replicas=-1", BAD_REQUEST, |c| async move {
            upload(
                &c,
                Some(WRITE),
                Form::new()
                    .text("replicas", "-1")
                    .part("file", file(b"hello", "rneg.txt")),
            )
            .await
        }),
        case("HTTP upload: not multipart", BAD_REQUEST, |c| async move {
            let r = c
                .http
                .post(format!("{}/upload", c.base()))
                .bearer_auth(WRITE)
                .header("content-type", "text/plain")
                .body("just text")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            Ok(Outcome::Http(r.status().as_u16()))
        }),
        case(
            "HTTP upload: body cut before the closing boundary",
            BAD_REQUEST,
            |c| async move {
                let body = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.txt\"\r\n\r\nhalf a fi";
                let r = c
                    .http
                    .post(format!("{}/upload", c.base()))
                    .bearer_auth(WRITE)
                    .header("content-type", "multipart/form-data; boundary=XyZ")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                not_stored(&c, "cut.txt").await?;
                Ok(Outcome::Http(r.status().as_u16()))
            },
        ),
        case(
            "HTTP upload: an existing name, other content",
            Outcome::Http(409),
            |c| async move {
                upload(
                    &c,
                    Some(WRITE),
                    Form::new().part("file", file(b"not the same", "small.txt")),
                )
                .await
            },
        ),
    ]
}
