//! Server-side RPC metrics for every shoal gRPC server: calls by method and status
//! code, and a latency histogram by method (time to response headers: for streaming
//! calls that is the time to the first answer, not the whole stream).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Registry {
    calls: BTreeMap<(String, String), u64>,
    latency: BTreeMap<String, Histogram>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Default::default);

fn record(method: &str, code: &str, seconds: f64) {
    let mut r = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    *r.calls
        .entry((method.to_string(), code.to_string()))
        .or_default() += 1;
    let h = r.latency.entry(method.to_string()).or_default();
    for (i, b) in BUCKETS.iter().enumerate() {
        if seconds <= *b {
            h.counts[i] += 1;
        }
    }
    h.sum += seconds;
    h.count += 1;
}

/// Prometheus text for the RPC metrics of this process.
pub fn render(out: &mut String) {
    let r = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    let _ = writeln!(out, "# HELP shoal_rpc_requests_total gRPC calls served, by method and status code.\n# TYPE shoal_rpc_requests_total counter");
    for ((m, c), n) in &r.calls {
        let _ = writeln!(
            out,
            "shoal_rpc_requests_total{{method=\"{m}\",code=\"{c}\"}} {n}"
        );
    }
    let _ = writeln!(out, "# HELP shoal_rpc_duration_seconds gRPC call latency to response headers, by method.\n# TYPE shoal_rpc_duration_seconds histogram");
    for (m, h) in &r.latency {
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "shoal_rpc_duration_seconds_bucket{{method=\"{m}\",le=\"{b}\"}} {}",
                h.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "shoal_rpc_duration_seconds_bucket{{method=\"{m}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "shoal_rpc_duration_seconds_sum{{method=\"{m}\"}} {}",
            h.sum
        );
        let _ = writeln!(
            out,
            "shoal_rpc_duration_seconds_count{{method=\"{m}\"}} {}",
            h.count
        );
    }
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
        let method = req.uri().path().trim_start_matches('/').to_string();
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            if !method.starts_with("grpc.") {
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
                record(&method, code, start.elapsed().as_secs_f64());
            }
            r
        })
    }
}
