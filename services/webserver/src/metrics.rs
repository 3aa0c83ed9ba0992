//! The webserver's `/metrics`: HTTP requests by route and status, bytes streamed out
//! and in, chunks fetched from peers, whether the tracker answers, and the RPC
//! metrics, in one `prometheus-client` registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A route is the router's pattern (`/download/{name}`) or `unmatched`, never a raw
/// path, so the series stay bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

#[derive(Default)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    pub downloaded_bytes: Counter,
    pub uploaded_bytes: Counter,
    pub chunks_fetched: Counter,
    pub uploads: Counter,
    pub upload_failures: Counter,
    pub download_failures: Counter,
    /// The probe's view, set just before each scrape is encoded.
    pub tracker_up: Gauge,
}

impl Metrics {
    pub fn request(&self, route: String, status: u16) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
    }

    /// The webserver's registry, served on its `/metrics` (names without `_total`: the
    /// encoder appends it to counters).
    pub fn registry(&self) -> Registry {
        let mut r = Registry::default();
        r.register(
            "shoal_webserver_http_requests",
            "HTTP requests by route and status",
            self.requests.clone(),
        );
        let counters = [
            (
                "shoal_webserver_downloaded_bytes",
                "File bytes sent to HTTP clients",
                &self.downloaded_bytes,
            ),
            (
                "shoal_webserver_uploaded_bytes",
                "File bytes received from HTTP uploads",
                &self.uploaded_bytes,
            ),
            (
                "shoal_webserver_chunks_fetched",
                "Chunks fetched from peers for downloads",
                &self.chunks_fetched,
            ),
            (
                "shoal_webserver_uploads",
                "Uploads stored through the gateway",
                &self.uploads,
            ),
            (
                "shoal_webserver_upload_failures",
                "Uploads that failed",
                &self.upload_failures,
            ),
            (
                "shoal_webserver_download_failures",
                "Downloads cut short by a chunk no replica could serve",
                &self.download_failures,
            ),
        ];
        for (name, help, c) in counters {
            r.register(name, help, c.clone());
        }
        r.register(
            "shoal_webserver_tracker_up",
            "Whether the tracker answered the last probe in time",
            self.tracker_up.clone(),
        );
        shoal_common::rpcmetrics::register(&mut r);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_requests_and_counters_under_their_names() {
        let m = Metrics::default();
        m.request("/download/{name}".into(), 206);
        m.request("/download/{name}".into(), 206);
        m.request("/x\"y".into(), 404);
        m.downloaded_bytes.inc_by(10);
        m.tracker_up.set(1);
        let text = shoal_common::admin::encode(&m.registry());
        for line in [
            "# TYPE shoal_webserver_http_requests_total counter\n",
            "shoal_webserver_http_requests_total{route=\"/download/{name}\",status=\"206\"} 2\n",
            "shoal_webserver_http_requests_total{route=\"/x\\\"y\",status=\"404\"} 1\n",
            "# TYPE shoal_webserver_downloaded_bytes_total counter\n",
            "shoal_webserver_downloaded_bytes_total 10\n",
            "# TYPE shoal_webserver_tracker_up gauge\n",
            "shoal_webserver_tracker_up 1\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
    }
}
