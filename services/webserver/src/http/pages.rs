//! Server-rendered pages: the file list (search, upload form), a file's detail (chunk ×
//! replica matrix, delete with confirmation), and the peers by zone. Every name that
//! reaches HTML goes through `Esc`, every name in a URL through `seg`.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;
use shoal_proto::v1 as pb;

use super::html::{
    self, ago, download_href, file_href, human, page, seg, short, span_ms, state_badge,
    status_badge, Esc, Facts, Nav,
};
use super::{AppError, Shared};

/// Chunk rows shown on a file page; the rest are summarised (the JSON API has them all).
const MAX_MATRIX_ROWS: usize = 1000;

/// Names per page of the file list (`?page_size=` overrides it, up to the tracker's 10,000).
pub const UI_PAGE_SIZE: u32 = 100;

#[derive(Deserialize, Default)]
pub struct IndexQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    deleted: Option<String>,
    #[serde(default)]
    page_token: Option<String>,
    #[serde(default)]
    page_size: Option<String>,
}

/// `/?q=&page_size=&page_token=` with the empty parts left out.
fn index_href(q: &str, page_size: u32, page_token: &str) -> String {
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let mut parts = Vec::new();
    if !q.is_empty() {
        parts.push(format!("q={}", enc(q)));
    }
    if page_size != UI_PAGE_SIZE {
        parts.push(format!("page_size={page_size}"));
    }
    if !page_token.is_empty() {
        parts.push(format!("page_token={}", enc(page_token)));
    }
    if parts.is_empty() {
        "/".into()
    } else {
        format!("/?{}", parts.join("&"))
    }
}

pub async fn index(
    State(st): Shared,
    Query(query): Query<IndexQuery>,
) -> Result<Html<String>, AppError> {
    let q = query.q.as_deref().map(str::trim).unwrap_or("");
    let size = match query.page_size.as_deref().map(str::trim) {
        None | Some("") => UI_PAGE_SIZE,
        Some(s) => s.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
            AppError::bad_request("page_size must be a whole number from 1 to 10,000.")
        })?,
    };
    let token = query.page_token.as_deref().unwrap_or("");
    let listed = st
        .client
        .files_page((!q.is_empty()).then_some(q), size, token)
        .await?;
    let files = listed.files;
    let paged = !token.is_empty() || !listed.next_page_token.is_empty();
    let mut b = String::new();
    let total: u64 = files.iter().map(|f| f.size).sum();
    let what = if q.is_empty() && !paged {
        format!(
            "{} file{} · {}",
            files.len(),
            plural(files.len()),
            human(total)
        )
    } else if q.is_empty() {
        // The catalogue's count comes from the probe; the page holds only its share.
        match st.tracker.info().map(|i| i.files) {
            Some(all) => format!(
                "{all} file{} · {} on this page",
                plural(usize::try_from(all).unwrap_or(usize::MAX)),
                files.len()
            ),
            None => format!("{} on this page", files.len()),
        }
    } else {
        format!(
            "{}{} match{} for “{}”{} · <a href=\"/\">show all</a>",
            files.len(),
            if listed.next_page_token.is_empty() {
                ""
            } else {
                "+"
            },
            if files.len() == 1 && listed.next_page_token.is_empty() {
                ""
            } else {
                "es"
            },
            Esc(q),
            if token.is_empty() {
                ""
            } else {
                " after the first page"
            },
        )
    };
    b += &format!(
        "<div class=\"pagehead\"><div><h1>Files</h1><p class=\"sub\">{what}</p></div>\
         <form class=\"search\" method=\"get\" action=\"/\" role=\"search\"><input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"Search by name\" aria-label=\"Search by name\"><button class=\"btn\" type=\"submit\">Search</button></form></div>",
        Esc(q)
    );
    if let Some(d) = query.deleted.as_deref().filter(|d| !d.is_empty()) {
        b += &format!("<div class=\"flash\">Deleted “{}”.</div>", Esc(d));
    }
    b += "<div class=\"tablewrap\"><table><thead><tr><th>Name</th><th class=\"num\">Size</th><th class=\"num\">Chunks</th><th class=\"num\">Replicas</th><th>Health</th><th>Added</th><th></th></tr></thead><tbody>";
    for f in &files {
        b += &format!(
            "<tr><td class=\"name\"><a href=\"{href}\">{name}</a><div class=\"mono muted small\" title=\"{id}\">{sid}</div></td>\
             <td class=\"num\">{size}</td><td class=\"num\">{chunks}</td><td class=\"num\" title=\"fewest live copies of any chunk / target\">{min}&thinsp;/&thinsp;{target}</td>\
             <td>{badge}</td><td class=\"muted small\">{added}</td><td class=\"num\"><a class=\"btn sm\" href=\"{dl}\">Download</a></td></tr>",
            href = file_href(&f.name),
            name = Esc(&f.name),
            id = Esc(&f.id),
            sid = Esc(short(&f.id, 16)),
            size = human(f.size),
            chunks = f.chunks,
            min = f.replicas_min,
            target = f.replicas_target,
            badge = status_badge(f.status),
            added = ago(f.created_unix_ms),
            dl = download_href(&f.name),
        );
    }
    if files.is_empty() {
        let msg = if !token.is_empty() {
            "No more names after the previous page."
        } else if q.is_empty() {
            "No files yet. Upload one below, or run <span class=\"mono\">shoal put FILE</span>."
        } else {
            "No file name contains that."
        };
        b += &format!("<tr><td colspan=\"7\" class=\"empty\">{msg}</td></tr>");
    }
    b += "</tbody></table></div>";
    if paged {
        // Tokens only go forward: "previous" is the browser's back button, or the start.
        b += "<nav class=\"pager\" aria-label=\"Pages\">";
        if !token.is_empty() {
            b += &format!(
                "<a class=\"btn sm\" rel=\"first\" href=\"{}\">« First page</a> ",
                Esc(&index_href(q, size, ""))
            );
        }
        if !listed.next_page_token.is_empty() {
            b += &format!(
                "<a class=\"btn sm\" rel=\"next\" href=\"{}\">Next page »</a>",
                Esc(&index_href(q, size, &listed.next_page_token))
            );
        }
        b += "</nav>";
    }
    // Fields before the file: a browser sends them in this order, and the file is
    // stored as it arrives (see http::upload).
    b += "<section class=\"card\"><h2>Upload a file</h2>\
          <form class=\"upload\" method=\"post\" action=\"/upload\" enctype=\"multipart/form-data\">\
          <label>Name<input type=\"text\" name=\"name\" maxlength=\"255\" placeholder=\"default: the file's own name\"></label>\
          <label>Replicas<input type=\"number\" name=\"replicas\" min=\"0\" max=\"16\" placeholder=\"cluster default\"></label>\
          <label class=\"check\"><input type=\"checkbox\" name=\"overwrite\" value=\"on\">Replace a different file of the same name</label>\
          <div class=\"row\"><label class=\"file\">File<span class=\"filebox\"><input type=\"file\" name=\"file\" required></span></label>\
          <button class=\"btn primary\" type=\"submit\">Upload</button></div></form></section>";
    Ok(page(
        "Files",
        Nav::Files,
        Facts::from_probe(st.tracker.ready(), st.tracker.info().as_ref()),
        &b,
    ))
}

#[derive(Deserialize, Default)]
pub struct FileQuery {
    #[serde(default)]
    uploaded: Option<String>,
}

pub async fn file(
    State(st): Shared,
    Path(name): Path<String>,
    Query(query): Query<FileQuery>,
) -> Result<Html<String>, AppError> {
    let (detail, peers) = tokio::join!(st.client.stat(&name), st.client.peers());
    let detail = detail?;
    let s = detail.summary.clone().unwrap_or_default();
    // The name the page was opened with, when it is one; else the file's first name.
    let shown = if detail.names.contains(&name) {
        name.clone()
    } else {
        s.name.clone()
    };
    let mut b = format!(
        "<div class=\"crumbs\"><a href=\"/\">Files</a> / {}</div>",
        Esc(&shown)
    );
    b += &format!(
        "<div class=\"pagehead\"><div><h1>{}</h1><p class=\"sub\">{} · {} · {} chunk{} of {}</p></div>\
         <div><a class=\"btn primary\" href=\"{}\">Download</a></div></div>",
        Esc(&shown),
        status_badge(s.status),
        human(s.size),
        s.chunks,
        plural(s.chunks as usize),
        human(s.chunk_size),
        download_href(&shown),
    );
    match query.uploaded.as_deref() {
        Some("dedup") => b += "<div class=\"flash\">Uploaded. The same content was already stored, so only the name was added.</div>",
        Some(_) => b += "<div class=\"flash\">Uploaded and stored on the peers the tracker chose.</div>",
        None => {}
    }
    let names: Vec<String> = detail
        .names
        .iter()
        .map(|n| format!("<a href=\"{}\">{}</a>", file_href(n), Esc(n)))
        .collect();
    b += &format!(
        "<section class=\"card\"><dl class=\"kv\">\
         <dt>File id</dt><dd class=\"mono\">{id}</dd>\
         <dt>Size</dt><dd>{size} <span class=\"muted\">({bytes} bytes)</span></dd>\
         <dt>Chunks</dt><dd>{chunks} × {chunk_size}</dd>\
         <dt>Replicas</dt><dd>at least {min} of {target} on every chunk {badge}</dd>\
         <dt>Names</dt><dd>{names}</dd>\
         <dt>Added</dt><dd>{added}</dd></dl></section>",
        id = Esc(&s.id),
        size = human(s.size),
        bytes = html::grouped(s.size),
        chunks = s.chunks,
        chunk_size = human(s.chunk_size),
        min = s.replicas_min,
        target = s.replicas_target,
        badge = status_badge(s.status),
        names = names.join(", "),
        added = if s.created_unix_ms > 0 {
            html::datetime(s.created_unix_ms)
        } else {
            "—".into()
        },
    );
    b += &matrix(&detail, &peers.unwrap_or_default());
    b += &format!(
        "<section class=\"card danger-zone\"><h2>Delete</h2><form method=\"post\" action=\"{href}/delete\">\
         <label><input type=\"checkbox\" name=\"confirm\" value=\"yes\" required> Remove the name “{name}”. Its chunks are deleted from the peers once no other name uses the content.</label>\
         <button class=\"btn danger\" type=\"submit\">Delete</button></form></section>",
        href = file_href(&shown),
        name = Esc(&shown),
    );
    Ok(page(
        &shown,
        Nav::Files,
        Facts::from_probe(st.tracker.ready(), st.tracker.info().as_ref()),
        &b,
    ))
}

/// The chunk × replica matrix: columns are peers grouped by zone, a dot where the
/// chunk has a live copy.
fn matrix(detail: &pb::FileDetail, peers: &[pb::PeerInfo]) -> String {
    // zone → peer id → address; every known peer, plus any replica the list missed.
    let mut zones: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for p in peers.iter().filter_map(|p| p.peer.as_ref()) {
        zones
            .entry(p.zone.clone())
            .or_default()
            .insert(p.id.clone(), p.addr.clone());
    }
    for r in detail.chunks.iter().flat_map(|c| &c.replicas) {
        zones
            .entry(r.zone.clone())
            .or_default()
            .entry(r.id.clone())
            .or_insert_with(|| r.addr.clone());
    }
    let columns: Vec<(&str, &str)> = zones
        .iter()
        .flat_map(|(z, ps)| ps.keys().map(move |id| (z.as_str(), id.as_str())))
        .collect();
    let reasons = detail.chunks.iter().any(|c| !c.placement_reason.is_empty());
    let mut b = String::from("<h2>Chunks and replicas</h2>");
    b += "<p class=\"note\">One column per peer, grouped by zone; a dot marks a live copy of the chunk.</p>";
    b += "<div class=\"tablewrap\"><table class=\"matrix\"><thead><tr><th rowspan=\"2\" class=\"num\">#</th><th rowspan=\"2\">Chunk hash</th><th rowspan=\"2\" class=\"num\">Size</th>";
    for (z, ps) in &zones {
        b += &format!(
            "<th colspan=\"{}\" class=\"c zs\">zone {}</th>",
            ps.len(),
            Esc(z)
        );
    }
    if reasons {
        b += "<th rowspan=\"2\">Placement</th>";
    }
    b += "</tr><tr>";
    let mut prev_zone = "";
    for (z, id) in &columns {
        let addr = zones
            .get(*z)
            .and_then(|ps| ps.get(*id))
            .map(String::as_str)
            .unwrap_or("");
        let first = if *z != prev_zone { " zs" } else { "" };
        prev_zone = z;
        b += &format!(
            "<th class=\"c mono{first}\" title=\"{} at {}\">{}</th>",
            Esc(id),
            Esc(addr),
            Esc(short(id, 8))
        );
    }
    b += "</tr></thead><tbody>";
    for c in detail.chunks.iter().take(MAX_MATRIX_ROWS) {
        let held: BTreeSet<&str> = c.replicas.iter().map(|r| r.id.as_str()).collect();
        b += &format!("<tr><td class=\"num\">{}</td><td class=\"mono\" title=\"{}\">{}…</td><td class=\"num\">{}</td>", c.index, Esc(&c.hash), Esc(short(&c.hash, 16)), human(c.size));
        let mut prev_zone = "";
        for (z, id) in &columns {
            let first = if *z != prev_zone { " zs" } else { "" };
            prev_zone = z;
            if held.contains(id) {
                b += &format!("<td class=\"c{first}\" title=\"copy on {} (zone {})\"><span class=\"has\" aria-label=\"copy\"></span></td>", Esc(id), Esc(z));
            } else {
                b += &format!(
                    "<td class=\"c{first}\"><span class=\"no\" aria-label=\"none\"></span></td>"
                );
            }
        }
        if reasons {
            b += &format!("<td class=\"reason\">{}</td>", Esc(&c.placement_reason));
        }
        b += "</tr>";
    }
    if detail.chunks.is_empty() {
        b += &format!(
            "<tr><td colspan=\"{}\" class=\"empty\">An empty file has no chunks.</td></tr>",
            3 + columns.len() + usize::from(reasons)
        );
    }
    b += "</tbody></table></div>";
    if detail.chunks.len() > MAX_MATRIX_ROWS {
        b += &format!(
            "<p class=\"note\">Showing the first {MAX_MATRIX_ROWS} of {} chunks.</p>",
            detail.chunks.len()
        );
    }
    b
}

pub async fn peers(State(st): Shared) -> Result<Html<String>, AppError> {
    let (peers, info) = tokio::join!(st.client.peers(), st.client.cluster_info());
    let peers = peers?;
    let fresh = info.ok();
    let info = fresh.clone().or_else(|| st.tracker.info());
    let mut zones: BTreeMap<&str, Vec<&pb::PeerInfo>> = BTreeMap::new();
    for p in &peers {
        zones
            .entry(p.peer.as_ref().map(|r| r.zone.as_str()).unwrap_or(""))
            .or_default()
            .push(p);
    }
    let used: u64 = peers.iter().map(|p| p.used_bytes).sum();
    let capacity: u64 = peers.iter().map(|p| p.capacity_bytes).sum();
    let mut b = format!(
        "<div class=\"pagehead\"><div><h1>Peers</h1><p class=\"sub\">{} peer{} in {} zone{} · {} used of {}</p></div></div>",
        peers.len(),
        plural(peers.len()),
        zones.len(),
        plural(zones.len()),
        human(used),
        human(capacity)
    );
    if let Some(i) = &info {
        let stat = |v: String, label: &str| {
            format!("<div class=\"stat\"><b>{v}</b><span>{label}</span></div>")
        };
        b += "<div class=\"stats\">";
        b += &stat(i.live_peers.to_string(), "live peers");
        b += &stat(i.zones.to_string(), "zones");
        b += &stat(i.files.to_string(), "files");
        b += &stat(i.chunks.to_string(), "chunks");
        b += &stat(i.under_replicated_chunks.to_string(), "under-replicated");
        b += &stat(i.lost_chunks.to_string(), "lost chunks");
        b += &stat(i.repair_queue.to_string(), "repairs queued");
        b += "</div>";
    }
    for (zone, mut ps) in zones {
        ps.sort_by(|a, b| {
            a.peer
                .as_ref()
                .map(|p| &p.id)
                .cmp(&b.peer.as_ref().map(|p| &p.id))
        });
        let (zused, zcap): (u64, u64) = ps
            .iter()
            .fold((0, 0), |(u, c), p| (u + p.used_bytes, c + p.capacity_bytes));
        b += &format!(
            "<div class=\"zone\"><h2>Zone {}</h2><span class=\"muted small\">{} peer{} · {} used of {}</span></div>",
            Esc(zone),
            ps.len(),
            plural(ps.len()),
            human(zused),
            human(zcap)
        );
        b += "<div class=\"tablewrap\"><table><thead><tr><th>Peer</th><th>Address</th><th>State</th><th class=\"num\">Chunks</th><th>Used</th><th class=\"num\">Transfers</th><th class=\"num\">Last heartbeat</th></tr></thead><tbody>";
        for p in ps {
            let r = p.peer.clone().unwrap_or_default();
            let pct = if p.capacity_bytes > 0 {
                (p.used_bytes as f64 / p.capacity_bytes as f64 * 100.0).min(100.0)
            } else {
                0.0
            };
            let hi = if pct >= 85.0 { " class=\"hi\"" } else { "" };
            b += &format!(
                "<tr><td class=\"mono\">{id}</td><td class=\"mono muted\">{addr}</td><td>{state}</td><td class=\"num\">{chunks}</td>\
                 <td class=\"usage\"><div class=\"bar\" title=\"{pct:.1}%\"><span{hi} style=\"width:{pct:.1}%\"></span></div><small>{used} of {cap} · {pct:.0}%</small></td>\
                 <td class=\"num\">{transfers}</td><td class=\"num\">{hb} ago</td></tr>",
                id = Esc(&r.id),
                addr = Esc(&r.addr),
                state = state_badge(p.state),
                chunks = html::grouped(p.chunks),
                used = human(p.used_bytes),
                cap = human(p.capacity_bytes),
                transfers = p.active_transfers,
                hb = span_ms(p.last_heartbeat_ms_ago),
            );
        }
        b += "</tbody></table></div>";
    }
    if peers.is_empty() {
        b += "<div class=\"card empty\">No peer has registered with the tracker yet.</div>";
    }
    let facts = match &fresh {
        Some(i) => Facts::Up(i),
        None => Facts::Down,
    };
    Ok(page("Peers", Nav::Peers, facts, &b))
}

#[derive(Deserialize, Default)]
pub struct DeleteForm {
    #[serde(default)]
    confirm: Option<String>,
}

/// `GET /files/{name}/delete`: the confirmation page.
pub async fn delete_confirm(
    State(st): Shared,
    Path(name): Path<String>,
) -> Result<Html<String>, AppError> {
    let detail = st.client.stat(&name).await?;
    Ok(confirm_page(&st, &name, &detail))
}

fn confirm_page(st: &crate::AppState, name: &str, detail: &pb::FileDetail) -> Html<String> {
    let s = detail.summary.clone().unwrap_or_default();
    let others = detail.names.iter().filter(|n| *n != name).count();
    let fate = if others > 0 {
        format!(
            "{others} other name{} still point{} at the same content, so it stays stored.",
            plural(others),
            if others == 1 { "s" } else { "" }
        )
    } else {
        format!(
            "No other name uses the content: its {} chunk{} ({}) will be deleted from the peers.",
            s.chunks,
            plural(s.chunks as usize),
            human(s.size)
        )
    };
    let b = format!(
        "<div class=\"crumbs\"><a href=\"/\">Files</a> / <a href=\"{href}\">{name}</a></div>\
         <section class=\"card danger-zone\"><h1>Delete “{name}”?</h1><p class=\"sub\">{fate}</p>\
         <form class=\"confirm\" method=\"post\" action=\"{href}/delete\"><input type=\"hidden\" name=\"confirm\" value=\"yes\">\
         <button class=\"btn danger solid\" type=\"submit\">Yes, delete it</button> <a class=\"btn\" href=\"{href}\">Cancel</a></form></section>",
        href = file_href(name),
        name = Esc(name),
    );
    page(
        &format!("Delete {name}?"),
        Nav::Files,
        Facts::from_probe(st.tracker.ready(), st.tracker.info().as_ref()),
        &b,
    )
}

/// `POST /files/{name}/delete`: deletes when confirmed, else shows the confirmation page.
pub async fn delete(
    State(st): Shared,
    Path(name): Path<String>,
    Form(form): Form<DeleteForm>,
) -> Result<Response, AppError> {
    if form.confirm.as_deref() != Some("yes") {
        let detail = st.client.stat(&name).await?;
        return Ok(confirm_page(&st, &name, &detail).into_response());
    }
    let r = st.client.delete(&name).await?;
    tracing::info!(name = %name, removed = ?r.names_removed, content_removed = r.content_removed, "deleted through the web UI");
    let removed = if r.names_removed.is_empty() {
        name
    } else {
        r.names_removed.join(", ")
    };
    Ok(Redirect::to(&format!("/?deleted={}", seg(&removed))).into_response())
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
