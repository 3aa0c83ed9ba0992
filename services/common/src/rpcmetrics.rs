//! Server-side RPC metrics for every shoal gRPC server: calls by method and status
//! code, and a latency histogram by method (time to response headers: for streaming
//! calls that is the time to the first answer, not the whole stream).
//!
//! Labels are never raw request paths: a method is recorded under its own name only
//! if the shoal API (its file descriptor set) defines it, else as `unknown`. So no
//! client, authenticated or not, can grow the series without bound (many distinct
//! paths); escaping is the encoder's.
//!
//! The families are process-wide (every server of the process records into them);
//! each service adds them to its registry with [`register`].

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Both label sets are bounded (the API's methods and `unknown`, times the status
/// codes), so a call takes the families' read locks only, after its first time.
struct Rpc {
    calls: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
}

static RPC: LazyLock<Rpc> = LazyLock::new(|| Rpc {
    calls: Family::default(),
    latency: Family::new_with_constructor(latency_histogram),
});

/// Every `package.Service/Method` of the shoal API.
static KNOWN: LazyLock<HashSet<String>> = LazyLock::new(|| {
    use prost::Message as _;
    let mut out = HashSet::new();
    if let Ok(set) = prost_types::FileDescriptorSet::decode(shoal_proto::FILE_DESCRIPTOR_SET) {
        for f in &set.file {
            for s in &f.service {
                for m in &s.method {
                    out.insert(format!("{}.{}/{}", f.package(), s.name(), m.name()));
                }
            }
        }
    }
    out
});

/// The label a request path is recorded under: its method if the API defines it.
fn label(path: &str) -> &'static str {
    KNOWN
        .get(path.trim_start_matches('/'))
        .map_or("unknown", String::as_str)
}

fn record(method: &'static str, code: &'static str, seconds: f64) {
    RPC.calls.get_or_create(&CallLabels { method, code }).inc();
    RPC.latency
        .get_or_create(&MethodLabels { method })
        .observe(seconds);
}

/// Add this process's RPC metrics to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "shoal_rpc_requests",
        "gRPC calls served, by method and status code",
        RPC.calls.clone(),
    );
    registry.register(
        "shoal_rpc_duration_seconds",
        "gRPC call latency to response headers, by method",
        RPC.latency.clone(),
    );
}

fn code_name(code: &str) -> &'static str {
    match code.parse::<i32>().map(tonic::Code::from) {
        Ok(tonic::Code::Ok) => "OK",
        Ok(tonic::Code::Cancelled) => "CANCELLED",
        Ok(tonic::Code::InvalidArgument) => "INVALID_ARGUMENT",
        Ok(tonic::Code::NotFound) => "NOT_FOUND",
        Ok(tonic::Code::AlreadyExists) => "ALREADY_EXISTS",
        Ok(tonic::Code::PermissionDenied) => "PERMISSION_DENIED",
        Ok(tonic::Code::Unauthenticated) => "UNAUTHENTICATED",
        Ok(tonic::Code::ResourceExhausted) => "RESOURCE_EXHAUSTED",
        Ok(tonic::Code::FailedPrecondition) => "FAILED_PRECONDITION",
        Ok(tonic::Code::OutOfRange) => "OUT_OF_RANGE",
        Ok(tonic::Code::Unavailable) => "UNAVAILABLE",
        Ok(tonic::Code::DataLoss) => "DATA_LOSS",
        Ok(tonic::Code::Internal) => "INTERNAL",
        _ => "UNKNOWN",
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

#[derive(Clone, Debug)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        // Health and reflection are not recorded.
        let skip = path.starts_with("/grpc.");
        let method = label(path);
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            if !skip {
                // Errors decided before the body are "trailers-only": the status is a header.
                let code = match &r {
                    Ok(resp) => resp
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .map(code_name)
                        .unwrap_or("OK"),
                    Err(_) => "UNKNOWN",
                };
                record(method, code, start.elapsed().as_secs_f64());
            }
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service};

    /// Answers every call OK.
    #[derive(Clone)]
    struct Ok200;
    impl Service<http::Request<()>> for Ok200 {
        type Response = http::Response<()>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            std::future::ready(Ok(http::Response::new(())))
        }
    }

    fn scrape() -> String {
        let mut registry = Registry::default();
        register(&mut registry);
        crate::admin::encode(&registry)
    }

    async fn call(path: &str) {
        let mut svc = RpcMetricsLayer.layer(Ok200);
        let uri = http::Uri::builder()
            .path_and_query(path)
            .build()
            .unwrap_or_else(|_| http::Uri::from_static("/shoal.v1.Nope/\"bad\""));
        let req = http::Request::builder().uri(uri).body(()).expect("request");
        let _ = svc.call(req).await;
    }

    /// Series lines of a Prometheus text rendering; panics on a line that does not
    /// parse (`name{label="value",...} number`, values escaped).
    fn series(text: &str) -> usize {
        let mut n = 0;
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (head, value) = line.rsplit_once(' ').expect("name and value");
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            if let Some((name, labels)) = head.split_once('{') {
                assert!(
                    name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{line:?}"
                );
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                let mut rest = labels;
                while !rest.is_empty() {
                    let (k, v) = rest
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label in {line:?}"));
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "{line:?}"
                    );
                    let mut end = None;
                    let mut esc = false;
                    for (i, c) in v.char_indices() {
                        match (esc, c) {
                            (true, _) => esc = false,
                            (false, '\\') => esc = true,
                            (false, '"') => {
                                end = Some(i);
                                break;
                            }
                            _ => {}
                        }
                    }
                    let end = end.unwrap_or_else(|| panic!("unterminated label value in {line:?}"));
                    rest = &v[end + 1..];
                    rest = rest.strip_prefix(',').unwrap_or(rest);
                    assert!(rest.is_empty() || !rest.starts_with('"'), "{line:?}");
                }
            }
            n += 1;
        }
        n
    }

    #[tokio::test]
    async fn unknown_paths_neither_break_nor_grow_the_metrics() {
        call("/shoal.v1.Tracker/ListFiles").await;
        call("/shoal.v1.Nope/First").await;
        let before = scrape();
        let count = series(&before);
        assert!(
            before.contains("method=\"shoal.v1.Tracker/ListFiles\""),
            "{before}"
        );
        // The names and types dashboards and alerts query.
        for line in [
            "# TYPE shoal_rpc_requests_total counter",
            "shoal_rpc_requests_total{method=\"shoal.v1.Tracker/ListFiles\",code=\"OK\"} ",
            "# TYPE shoal_rpc_duration_seconds histogram",
            "shoal_rpc_duration_seconds_bucket{method=\"shoal.v1.Tracker/ListFiles\",le=\"0.0005\"} ",
            "shoal_rpc_duration_seconds_bucket{method=\"shoal.v1.Tracker/ListFiles\",le=\"+Inf\"} ",
            "shoal_rpc_duration_seconds_count{method=\"shoal.v1.Tracker/ListFiles\"} ",
        ] {
            assert!(before.contains(line), "no {line:?} in\n{before}");
        }
        for i in 0..10_000 {
            let path = match i % 4 {
                0 => format!("/shoal.v1.Tracker/Nope{i}"),
                1 => format!("/x\"y/{i}\""),
                2 => format!("/shoal.v1.Peer{i}/GetChunk"),
                _ => format!("/{i}%22}} 1\n"),
            };
            call(&path).await;
        }
        let after = scrape();
        assert_eq!(
            series(&after),
            count,
            "unknown paths added series:\n{after}"
        );
        assert!(after.contains("method=\"unknown\""), "{after}");
    }
}
