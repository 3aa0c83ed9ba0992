//! Webserver counters, rendered as Prometheus text on `/metrics`: HTTP requests by
//! route and status, bytes streamed out and in, chunks fetched from peers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    pub downloaded_bytes: AtomicU64,
    pub uploaded_bytes: AtomicU64,
    pub chunks_fetched: AtomicU64,
    pub uploads: AtomicU64,
    pub upload_failures: AtomicU64,
    pub download_failures: AtomicU64,
}

impl Metrics {
    pub fn request(&self, route: &str, status: u16) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((route.to_string(), status))
            .or_default() += 1;
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Prometheus text exposition; `tracker_up` is the probe's view.
    pub fn render(&self, tracker_up: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP shoal_webserver_http_requests_total HTTP requests by route and status.\n# TYPE shoal_webserver_http_requests_total counter");
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let route = route.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "shoal_webserver_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let counters = [
            (
                "shoal_webserver_downloaded_bytes_total",
                "File bytes sent to HTTP clients.",
                &self.downloaded_bytes,
            ),
            (
                "shoal_webserver_uploaded_bytes_total",
                "File bytes received from HTTP uploads.",
                &self.uploaded_bytes,
            ),
            (
                "shoal_webserver_chunks_fetched_total",
                "Chunks fetched from peers for downloads.",
                &self.chunks_fetched,
            ),
            (
                "shoal_webserver_uploads_total",
                "Uploads stored through the gateway.",
                &self.uploads,
            ),
            (
                "shoal_webserver_upload_failures_total",
                "Uploads that failed.",
                &self.upload_failures,
            ),
            (
                "shoal_webserver_download_failures_total",
                "Downloads cut short by a chunk no replica could serve.",
                &self.download_failures,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP shoal_webserver_tracker_up Whether the tracker answered the last probe in time.\n# TYPE shoal_webserver_tracker_up gauge\nshoal_webserver_tracker_up {}",
            u8::from(tracker_up)
        );
        shoal_common::rpcmetrics::render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_requests_and_counters() {
        let m = Metrics::default();
        m.request("/download/{name}", 206);
        m.request("/download/{name}", 206);
        Metrics::add(&m.downloaded_bytes, 10);
        let text = m.render(true);
        assert!(
            text.contains(
                "shoal_webserver_http_requests_total{route=\"/download/{name}\",status=\"206\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("shoal_webserver_downloaded_bytes_total 10"));
        assert!(text.contains("shoal_webserver_tracker_up 1"));
    }
}
