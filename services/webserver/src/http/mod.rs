//! The HTTP gateway: routes, the error type every handler returns (an HTML page, or
//! JSON under `/api/`), request metrics and response headers common to all pages.
//!
//! Handlers never hold file bytes beyond a few chunks: downloads stream from the peers,
//! uploads stream through the client library to the peers as they arrive.

mod api;
pub mod download;
pub mod html;
mod pages;
pub mod upload;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use shoal_client::ClientError;

use crate::AppState;

pub type Shared = State<Arc<AppState>>;

/// Every route of the gateway.
pub fn router(state: Arc<AppState>) -> Router {
    // The upload handler names the limit itself; this is the backstop (form overhead, and
    // the rest of a refused body read to answer it, allowed).
    let upload_limit = usize::try_from(
        state
            .cfg
            .max_upload_bytes
            .saturating_add(upload::FORM_SLACK)
            .saturating_add(upload::DRAIN_BYTES),
    )
    .unwrap_or(usize::MAX);
    let m = state.clone();
    let downloads = Arc::new(tokio::sync::Semaphore::new(state.cfg.max_downloads));
    let uploads = Arc::new(tokio::sync::Semaphore::new(state.cfg.max_uploads));
    let registry = state.metrics.registry();
    let render: shoal_common::admin::Render = Arc::new(move || {
        m.metrics.tracker_up.set(i64::from(m.tracker.ready()));
        shoal_common::admin::encode(&registry)
    });
    Router::new()
        .route("/", get(pages::index))
        .route("/peers", get(pages::peers))
        .route("/files/{name}", get(pages::file))
        .route(
            "/files/{name}/delete",
            get(pages::delete_confirm).post(pages::delete),
        )
        .route(
            "/upload",
            post(upload::upload)
                .layer(DefaultBodyLimit::max(upload_limit))
                .layer(middleware::from_fn_with_state(uploads, at_most)),
        )
        .route(
            "/download/{name}",
            get(download::download).layer(middleware::from_fn_with_state(downloads, at_most)),
        )
        .route("/api/v1/files", get(api::files))
        .route("/api/v1/files/{name}", get(api::file))
        .route("/api/v1/search", get(api::search))
        .route("/api/v1/peers", get(api::peers))
        .route("/api/v1/cluster", get(api::cluster))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(fallback)
        .with_state(state.clone())
        .merge(shoal_common::admin::metrics_route(render))
        .layer(middleware::from_fn(refuse_cross_site_writes))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state, track))
}

/// At most as many transfers at once as `slots` has permits (`SHOAL_MAX_DOWNLOADS`,
/// `SHOAL_MAX_UPLOADS`): past that, 503 with `Retry-After`. The permit lives as long
/// as the response body, so a streaming download holds it until its last byte.
async fn at_most(
    State(slots): State<Arc<tokio::sync::Semaphore>>,
    req: Request,
    next: Next,
) -> Response {
    let Ok(permit) = slots.try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, HeaderValue::from_static("5"))],
            "Too many transfers in progress; retry in a few seconds.\n",
        )
            .into_response();
    };
    let resp = next.run(req).await;
    resp.map(|body| {
        use futures::StreamExt as _;
        axum::body::Body::from_stream(body.into_data_stream().map(move |chunk| {
            let _held = &permit;
            chunk
        }))
    })
}

/// HTTP authentication when tokens are configured: reads need a read token, changes
/// (POST) a write token, presented as `Authorization: Bearer …` or the `shoal_token`
/// cookie (a browser gets it by opening any page once with `?token=…`). Probes and
/// metrics stay open. 401 without a valid token, 403 with a token of too low a role.
async fn authorize(State(state): Shared, req: Request, next: Next) -> Response {
    use shoal_common::auth::Role;
    let path = req.uri().path();
    if !state.tokens.enabled() || matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return next.run(req).await;
    }
    let needed = if req.method() == axum::http::Method::POST {
        Role::Write
    } else {
        Role::Read
    };
    let presented = presented_token(req.headers(), req.uri().query());
    match state.tokens.authorize(presented.header.as_deref(), needed) {
        Ok(()) => {
            let mut resp = next.run(req).await;
            if let Some(v) = presented.from_query.as_deref().and_then(token_cookie) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
            resp
        }
        Err(s) => {
            let code = if s.code() == tonic::Code::PermissionDenied {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            };
            let mut resp = AppError::new(code, s.message()).into_response();
            if code == StatusCode::UNAUTHORIZED {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"shoal\""),
                );
            }
            resp
        }
    }
}

/// The token a request presents, as [`authorize`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    /// What is checked with `Tokens::authorize`: the request's `authorization` header,
    /// else `Bearer ` and the `token` query parameter, else the `shoal_token` cookie.
    pub header: Option<String>,
    /// The `token` query parameter, percent-decoded, when it is what `header` carries
    /// (no `authorization` header): set as the cookie once accepted. A request
    /// authorised by its header never gets its query's value as a cookie.
    pub from_query: Option<String>,
}

/// Read the token from the `authorization` header, the `token` query parameter or the
/// `shoal_token` cookie (in that order). A header value with a byte that is not
/// visible ASCII counts as absent. Pure, so the fuzz target `http_token` drives it
/// with any header bytes.
pub fn presented_token(headers: &axum::http::HeaderMap, query: Option<&str>) -> Presented {
    let from_query = query.and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(|t| {
                percent_encoding::percent_decode_str(t)
                    .decode_utf8_lossy()
                    .to_string()
            })
    });
    let from_cookie = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| {
            c.split(';')
                .find_map(|kv| kv.trim().strip_prefix("shoal_token="))
        })
        .map(str::to_string);
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if bearer.is_some() {
        return Presented {
            header: bearer,
            from_query: None,
        };
    }
    let header = from_query
        .clone()
        .or(from_cookie)
        .map(|t| format!("Bearer {t}"));
    Presented { header, from_query }
}

/// The `Set-Cookie` that lets a browser that opened a page with `?token=…` keep the
/// token (trimmed, as `Tokens::authorize` compares it); `None` when the token cannot
/// be a header value.
pub fn token_cookie(token: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "shoal_token={}; Path=/; HttpOnly; SameSite=Strict",
        token.trim()
    ))
    .ok()
}

/// Pages change state only through same-site forms: a POST another site's page makes
/// the browser send (delete, upload) is refused. Non-browser clients send neither
/// header and pass.
async fn refuse_cross_site_writes(req: Request, next: Next) -> Response {
    if req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD {
        return next.run(req).await;
    }
    let h = req.headers();
    let fetch_site = h.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let origin_host = h
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(|o| o.split_once("://").map_or(o, |(_, rest)| rest));
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
    let cross = fetch_site == Some("cross-site")
        || matches!((origin_host, host), (Some(o), Some(h)) if o != h);
    if cross {
        return AppError::new(
            StatusCode::FORBIDDEN,
            "Changes must come from this site's own pages.",
        )
        .into_response();
    }
    next.run(req).await
}

/// `/readyz`: 200 while the tracker answers, 503 otherwise.
async fn readyz(State(st): Shared) -> Response {
    if st.tracker.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let why = st
            .tracker
            .last_error()
            .unwrap_or_else(|| "no answer yet".into());
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("tracker {} unreachable: {why}\n", st.cfg.tracker_url),
        )
            .into_response()
    }
}

async fn fallback(req: Request) -> Response {
    let e = AppError::not_found(format!("There is no page at {}.", req.uri().path()));
    if req.uri().path().starts_with("/api/") {
        ApiError(e).into_response()
    } else {
        e.into_response()
    }
}

/// Count every request by route and status, and set headers every response carries.
async fn track(State(st): Shared, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let mut res = next.run(req).await;
    st.metrics.request(route, res.status().as_u16());
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let is_html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html {
        // Pages carry no script: forbid it outright.
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    res
}

/// What went wrong, with the HTTP status it deserves. Renders as an HTML page;
/// wrap it in `ApiError` for JSON.
#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub message: String,
}

impl AppError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// The JSON `code` field: the status as a word.
    fn code(&self) -> &'static str {
        match self.status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::BAD_REQUEST => "invalid_argument",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            StatusCode::BAD_GATEWAY => "upstream_failed",
            _ => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self.status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::BAD_REQUEST => "Bad request",
            StatusCode::CONFLICT => "Conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "Too large",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::SERVICE_UNAVAILABLE => "Cluster unavailable",
            StatusCode::BAD_GATEWAY => "Peers failed",
            _ => "Something went wrong",
        }
    }
}

impl From<ClientError> for AppError {
    fn from(e: ClientError) -> Self {
        use tonic::Code;
        let status = match &e {
            ClientError::Rpc { code, .. } => match code {
                Code::NotFound => StatusCode::NOT_FOUND,
                Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => {
                    StatusCode::CONFLICT
                }
                Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
                Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::BAD_GATEWAY,
            },
            ClientError::Verify(_) | ClientError::Other(_) => StatusCode::BAD_GATEWAY,
            ClientError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &e {
            // The tracker's own words, without our "what" prefix.
            ClientError::Rpc { message, .. } => message.clone(),
            _ => e.to_string(),
        };
        if status.is_server_error() {
            tracing::warn!(error = %e, "request failed");
        }
        Self { status, message }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = format!(
            "<div class=\"card\"><h1>{title}</h1><p class=\"sub\">{msg}</p><p><a class=\"btn\" href=\"/\">Back to files</a></p></div>",
            title = self.title(),
            msg = html::Esc(&self.message),
        );
        (
            self.status,
            html::page(self.title(), html::Nav::None, html::Facts::Quiet, &body),
        )
            .into_response()
    }
}

/// An error answered as JSON: `{"error": {"code": "not_found", "status": 404, "message": "…"}}`.
pub struct ApiError(pub AppError);

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let body = serde_json::json!({"error": {"code": e.code(), "status": e.status.as_u16(), "message": e.message}});
        (e.status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;

    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k, HeaderValue::from_str(v).expect("valid value"));
        }
        h
    }

    #[test]
    fn the_bearer_header_then_the_query_then_the_cookie() {
        let cookie = (header::COOKIE, "a=1; shoal_token=fromcookie ; b=2");
        let bearer = (header::AUTHORIZATION, "Bearer fromheader");
        let p = presented_token(
            &headers(std::slice::from_ref(&cookie)),
            Some("x=1&token=from%20query"),
        );
        assert_eq!(p.header.as_deref(), Some("Bearer from query"));
        assert_eq!(p.from_query.as_deref(), Some("from query"));
        let p = presented_token(&headers(std::slice::from_ref(&cookie)), None);
        assert_eq!(p.header.as_deref(), Some("Bearer fromcookie"));
        let p = presented_token(&headers(&[cookie, bearer]), Some("token=q"));
        assert_eq!(p.header.as_deref(), Some("Bearer fromheader"));
        assert_eq!(p.from_query, None, "the query is not what was checked");
        assert_eq!(
            presented_token(&HeaderMap::new(), Some("tokens=1")).header,
            None
        );
    }

    /// Found by the `http_token` fuzz target: a request authorised by its bearer header
    /// got its unchecked `?token=` value (attributes and all) back as `Set-Cookie`.
    #[test]
    fn only_a_checked_query_token_becomes_the_cookie() {
        let tokens = shoal_common::auth::Tokens {
            read: Some("read-token-0123456789abcdef".into()),
            ..Default::default()
        };
        let h = headers(&[(header::AUTHORIZATION, "Bearer read-token-0123456789abcdef")]);
        let p = presented_token(&h, Some("token=junk%3B%20Domain%3Devil.example"));
        assert!(tokens
            .authorize(p.header.as_deref(), shoal_common::auth::Role::Read)
            .is_ok());
        assert_eq!(p.from_query.as_deref().and_then(token_cookie), None);

        let p = presented_token(
            &HeaderMap::new(),
            Some("token=%20read-token-0123456789abcdef%20"),
        );
        assert!(tokens
            .authorize(p.header.as_deref(), shoal_common::auth::Role::Read)
            .is_ok());
        let cookie = p.from_query.as_deref().and_then(token_cookie).expect("set");
        assert_eq!(
            cookie,
            "shoal_token=read-token-0123456789abcdef; Path=/; HttpOnly; SameSite=Strict"
        );
    }
}
