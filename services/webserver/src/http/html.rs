//! HTML building blocks: escaping (every name from the catalogue goes through `Esc`),
//! URL segments, human sizes and times, badges, and the page layout with its embedded
//! stylesheet. No templates and no JavaScript: pages are `format!` over these.

use std::fmt;

use axum::response::Html;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use shoal_proto::v1 as pb;

pub use shoal_client::display::{human, state_word, status_word};

/// Characters left as they are in a path segment or query value: RFC 3986 unreserved.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// HTML-escaped text, for element content and quoted attribute values alike.
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = 0;
        for (i, c) in self.0.char_indices() {
            let rep = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&#39;",
                _ => continue,
            };
            f.write_str(&self.0[last..i])?;
            f.write_str(rep)?;
            last = i + c.len_utf8();
        }
        f.write_str(&self.0[last..])
    }
}

/// A name as one URL path segment (or query value): `/`, `?`, `#`, `%` and the rest encoded.
pub fn seg(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// Link to a file's page.
pub fn file_href(name: &str) -> String {
    format!("/files/{}", seg(name))
}

/// Link to a file's download.
pub fn download_href(name: &str) -> String {
    format!("/download/{}", seg(name))
}

/// 1234567 → "1,234,567".
pub fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration in milliseconds, said the way people read it: "0.4 s", "3 min", "2 h", "5 d".
pub fn span_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{:.1} s", ms as f64 / 1000.0),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// UTC date and time of a Unix timestamp in milliseconds: "2025-03-01 14:05 UTC".
pub fn datetime(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// "3 min ago", with the exact time on hover.
pub fn ago(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "—".into();
    }
    let elapsed = (now_ms() - unix_ms).max(0) as u64;
    let said = match elapsed {
        0..=9_999 => "just now".to_string(),
        10_000..=59_999 => format!("{} s ago", elapsed / 1000),
        _ => format!("{} ago", span_ms(elapsed)),
    };
    format!("<time title=\"{}\">{said}</time>", datetime(unix_ms))
}

/// The replica health of a file as a colored badge.
pub fn status_badge(status: i32) -> String {
    let (class, label) = match status_word(status) {
        "healthy" => ("b-ok", "healthy"),
        "under_replicated" => ("b-warn", "under-replicated"),
        "unavailable" => ("b-bad", "unavailable"),
        _ => ("b-muted", "unknown"),
    };
    format!("<span class=\"badge {class}\">{label}</span>")
}

/// A peer's state as a colored badge.
pub fn state_badge(state: i32) -> String {
    let word = state_word(state);
    let class = match word {
        "alive" => "b-ok",
        "suspect" | "draining" => "b-warn",
        "dead" => "b-bad",
        _ => "b-muted",
    };
    format!("<span class=\"badge {class}\">{word}</span>")
}

/// A short peer id for column heads (the full id on hover).
pub fn short(id: &str, n: usize) -> &str {
    match id.char_indices().nth(n) {
        Some((i, _)) => &id[..i],
        None => id,
    }
}

/// Which tab of the top navigation is active.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Files,
    Peers,
    None,
}

/// What the page header says about the cluster.
pub enum Facts<'a> {
    /// The tracker answers: peers, zones, files.
    Up(&'a pb::ClusterInfoResponse),
    /// The tracker has not answered for a while.
    Down,
    /// Nothing to say (error pages).
    Quiet,
}

impl<'a> Facts<'a> {
    /// The probe's view: its last answer while the tracker is reachable.
    pub fn from_probe(ready: bool, info: Option<&'a pb::ClusterInfoResponse>) -> Self {
        match (ready, info) {
            (true, Some(i)) => Facts::Up(i),
            _ => Facts::Down,
        }
    }
}

/// A whole page: header with the shoal name and navigation, the cluster summary,
/// `body`, and a footer.
pub fn page(title: &str, nav: Nav, facts: Facts<'_>, body: &str) -> Html<String> {
    let tab = |n: Nav, href: &str, label: &str| {
        let on = if n == nav {
            " class=\"on\" aria-current=\"page\""
        } else {
            ""
        };
        format!("<a href=\"{href}\"{on}>{label}</a>")
    };
    let summary = match facts {
        Facts::Up(i) => format!(
            "<span class=\"cluster\" title=\"tracker reachable\"><span class=\"dot\"></span>{} peer{} · {} zone{} · {} file{} · replication {}</span>",
            i.live_peers,
            if i.live_peers == 1 { "" } else { "s" },
            i.zones,
            if i.zones == 1 { "" } else { "s" },
            i.files,
            if i.files == 1 { "" } else { "s" },
            i.replication_factor
        ),
        Facts::Down => "<span class=\"cluster\" title=\"the tracker does not answer\"><span class=\"dot down\"></span>tracker unreachable</span>".into(),
        Facts::Quiet => String::new(),
    };
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · shoal</title><style>{CSS}</style></head>\n<body><header class=\"top\"><div class=\"wrap\">\
         <a class=\"brand\" href=\"/\">{LOGO}<span>shoal</span></a><nav>{files}{peers}</nav>{summary}</div></header>\n\
         <main class=\"wrap\">{body}</main>\n<footer class=\"wrap\">shoal {version} · <a href=\"/api/v1/cluster\">JSON API</a> · <a href=\"/metrics\">metrics</a></footer></body></html>\n",
        title = Esc(title),
        files = tab(Nav::Files, "/", "Files"),
        peers = tab(Nav::Peers, "/peers", "Peers"),
        version = shoal_common::VERSION,
    ))
}

const LOGO: &str = "<svg width=\"26\" height=\"20\" viewBox=\"0 0 26 20\" aria-hidden=\"true\">\
<path d=\"M2 6c3-3 7-3 10 0-3 3-7 3-10 0zm10 0 3-2v4z\" fill=\"#22d3ee\"/>\
<path d=\"M8 14c3-3 7-3 10 0-3 3-7 3-10 0zm10 0 3-2v4z\" fill=\"#67e8f9\"/>\
<path d=\"M1 15c2-2 4.5-2 6.5 0-2 2-4.5 2-6.5 0z\" fill=\"#0891b2\"/></svg>";

const CSS: &str = r#"
:root{--bg:#f5f6f8;--card:#fff;--ink:#1f2733;--muted:#667085;--line:#e4e7ec;--head:#0f172a;--brand:#0e7490;
--ok-bg:#dcfce7;--ok:#166534;--warn-bg:#fef3c7;--warn:#92400e;--bad-bg:#fee2e2;--bad:#b42318}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--ink);background:var(--bg)}
a{color:var(--brand);text-decoration:none}a:hover{text-decoration:underline}
.wrap{max-width:1200px;margin:0 auto;padding-left:28px;padding-right:28px}
header.top{background:var(--head);color:#cbd5e1}
header.top .wrap{display:flex;align-items:center;gap:32px;height:58px}
.brand{display:flex;align-items:center;gap:9px;color:#fff;font-weight:700;font-size:20px;letter-spacing:.01em}
.brand:hover{text-decoration:none}
nav{display:flex;gap:24px;height:100%}
nav a{display:flex;align-items:center;color:#cbd5e1;border-bottom:2px solid transparent;font-weight:500}
nav a:hover{color:#fff;text-decoration:none}nav a.on{color:#fff;border-bottom-color:#22d3ee}
.cluster{margin-left:auto;font-size:13px;color:#94a3b8;white-space:nowrap}
.dot{display:inline-block;width:8px;height:8px;border-radius:50%;background:#22c55e;margin-right:7px;vertical-align:1px}
.dot.down{background:#ef4444}
main{padding-top:28px;padding-bottom:36px}
h1{font-size:26px;line-height:1.25;margin:0 0 4px;word-break:break-word}
h2{font-size:17px;margin:0 0 12px}
.sub{color:var(--muted);margin:0 0 20px}
.muted{color:var(--muted)}.small{font-size:12.5px}
.pagehead{display:flex;align-items:flex-end;justify-content:space-between;gap:20px;flex-wrap:wrap;margin-bottom:18px}
.pagehead .sub{margin:0}
.crumbs{font-size:13.5px;color:var(--muted);margin-bottom:8px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:20px 22px;margin-bottom:22px}
.tablewrap{background:var(--card);border:1px solid var(--line);border-radius:10px;overflow-x:auto;margin-bottom:24px}
table{width:100%;border-collapse:collapse}
th{font-size:11.5px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);text-align:left;font-weight:600;padding:10px 14px;background:#f9fafb;border-bottom:1px solid var(--line);white-space:nowrap}
td{padding:10px 14px;border-bottom:1px solid var(--line);vertical-align:middle}
tbody tr:last-child td{border-bottom:0}
tbody tr:hover td{background:#fafcfd}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.name a{font-weight:600;word-break:break-all}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;font-size:12px;font-weight:600;white-space:nowrap}
.b-ok{background:var(--ok-bg);color:var(--ok)}.b-warn{background:var(--warn-bg);color:var(--warn)}
.b-bad{background:var(--bad-bg);color:var(--bad)}.b-muted{background:#eef0f3;color:#475467}
.btn{display:inline-block;padding:8px 16px;border-radius:8px;border:1px solid #d0d5dd;background:#fff;color:var(--ink);font:inherit;font-weight:600;cursor:pointer;white-space:nowrap}
.btn:hover{text-decoration:none;background:#f9fafb}
.btn.sm{padding:4px 12px;font-size:13px}
.btn.primary{background:var(--brand);border-color:var(--brand);color:#fff}.btn.primary:hover{background:#155e75}
.btn.danger{border-color:#fda29b;color:var(--bad)}.btn.danger:hover{background:#fef3f2}
.btn.danger.solid{background:var(--bad);border-color:var(--bad);color:#fff}.btn.danger.solid:hover{background:#912018}
input[type=text],input[type=search],input[type=number]{font:inherit;height:40px;padding:0 11px;border:1px solid #d0d5dd;border-radius:8px;background:#fff;color:var(--ink)}
input:focus{outline:2px solid #67e8f9;outline-offset:0}
.search{display:flex;gap:8px}.search input{width:320px}
.pager{display:flex;gap:8px;justify-content:flex-end;margin:12px 0}
form.upload{display:grid;grid-template-columns:2fr 2fr 1fr;gap:16px 18px;align-items:end}
form.upload label{display:flex;flex-direction:column;gap:6px;font-size:13px;font-weight:600;color:#344054}
form.upload label.file{order:-1}
form.upload input{font-weight:400}
form.upload .row{grid-column:1/-1;display:flex;align-items:center;justify-content:space-between;gap:16px;flex-wrap:wrap}
form.upload label.check,label.check{display:flex;flex-direction:row;align-items:center;gap:8px;font-size:14px;font-weight:400;color:var(--ink)}
.filebox{display:flex;align-items:center;height:40px;border:1px dashed #98a2b3;border-radius:8px;padding:0 6px;background:#f9fafb}
input[type=file]{font:inherit;font-size:13.5px;color:var(--muted);width:100%}
input[type=file]::file-selector-button{font:inherit;font-weight:600;padding:3px 12px;margin-right:10px;border:1px solid #d0d5dd;border-radius:6px;background:#fff;color:var(--ink);cursor:pointer}
.bar{height:8px;background:#eaecf0;border-radius:4px;overflow:hidden;width:160px}
.bar span{display:block;height:100%;background:var(--brand)}
.bar span.hi{background:#d97706}
.usage small{color:var(--muted);font-size:12px;white-space:nowrap}
.stats{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin-bottom:26px}
.stat{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 16px}
.stat b{display:block;font-size:22px;font-variant-numeric:tabular-nums}.stat span{color:var(--muted);font-size:12.5px}
.kv{display:grid;grid-template-columns:150px 1fr;gap:8px 18px;margin:0}
.kv dt{color:var(--muted)}.kv dd{margin:0;word-break:break-all}
table.matrix th,table.matrix td{padding:6px 10px}
table.matrix td.c,table.matrix th.c{text-align:center}
th.mono{text-transform:none;letter-spacing:0;font-weight:500}
table.matrix .zs{border-left:1px solid var(--line)}
.has{display:inline-block;width:12px;height:12px;border-radius:50%;background:var(--brand)}
.no{display:inline-block;width:6px;height:6px;border-radius:50%;background:#d0d5dd}
.reason{font-size:12px;color:var(--muted);min-width:240px}
.zone{display:flex;align-items:baseline;gap:10px}
.flash{padding:12px 16px;border-radius:8px;margin-bottom:18px;background:#ecfeff;border:1px solid #a5f3fc;color:#155e75}
.flash.err{background:var(--bad-bg);border-color:#fda29b;color:var(--bad)}
.empty{color:var(--muted);text-align:center;padding:36px 16px}
.danger-zone{border-color:#fecdca}
.danger-zone form{display:flex;gap:16px;align-items:center;justify-content:space-between;flex-wrap:wrap}
.danger-zone form.confirm{justify-content:flex-start}
@media (max-width:760px){form.upload{grid-template-columns:1fr}.cluster{display:none}.search input{width:180px}}
.note{font-size:13px;color:var(--muted);margin:-12px 0 20px}
footer{color:var(--muted);font-size:13px;padding-bottom:32px}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_matters() {
        assert_eq!(
            Esc("<a href=\"x\">'&'</a>").to_string(),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(Esc("plain ü").to_string(), "plain ü");
    }

    #[test]
    fn segments_keep_names_whole() {
        assert_eq!(seg("dir/a b?#%.txt"), "dir%2Fa%20b%3F%23%25.txt");
        assert_eq!(seg("ü"), "%C3%BC");
        assert_eq!(seg("a-b_c.d~e"), "a-b_c.d~e");
    }

    #[test]
    fn numbers_and_times_for_people() {
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(12), "12");
        assert_eq!(span_ms(400), "0.4 s");
        assert_eq!(span_ms(125_000), "2 min");
        assert_eq!(datetime(0), "1970-01-01 00:00 UTC");
        assert_eq!(datetime(1_709_301_900_000), "2024-03-01 14:05 UTC");
        assert_eq!(short("abcdef", 4), "abcd");
        assert_eq!(short("ab", 4), "ab");
    }
}
