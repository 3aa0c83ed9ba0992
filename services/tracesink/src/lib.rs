//! A trace sink for development and tests: an OTLP/gRPC `TraceService` that appends
//! every received span to a file as one JSON object per line, with its service name,
//! instance id, ids, timing and attributes. `shoal trace` reads that file.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One recorded span.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpanRecord {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    pub service: String,
    pub instance: String,
    pub kind: i32,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

fn value(v: &Option<AnyValue>) -> serde_json::Value {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone().into(),
        Some(Value::BoolValue(b)) => (*b).into(),
        Some(Value::IntValue(i)) => (*i).into(),
        Some(Value::DoubleValue(d)) => (*d).into(),
        Some(Value::ArrayValue(a)) => a
            .values
            .iter()
            .map(|v| value(&Some(v.clone())))
            .collect::<Vec<_>>()
            .into(),
        Some(other) => format!("{other:?}").into(),
        None => serde_json::Value::Null,
    }
}

fn attrs(kv: &[KeyValue]) -> serde_json::Map<String, serde_json::Value> {
    kv.iter()
        .map(|k| (k.key.clone(), value(&k.value)))
        .collect()
}

pub struct Sink {
    out: Mutex<std::io::BufWriter<std::fs::File>>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut lines = Vec::new();
        for rs in req.into_inner().resource_spans {
            let res = rs
                .resource
                .map(|r| attrs(&r.attributes))
                .unwrap_or_default();
            let service = res
                .get("service.name")
                .and_then(|v| v.as_str())
                .unwrap_or("unknown")
                .to_string();
            let instance = res
                .get("service.instance.id")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let rec = SpanRecord {
                        trace_id: hex::encode(&s.trace_id),
                        span_id: hex::encode(&s.span_id),
                        parent_span_id: hex::encode(&s.parent_span_id),
                        name: s.name,
                        service: service.clone(),
                        instance: instance.clone(),
                        kind: s.kind,
                        start_unix_nano: s.start_time_unix_nano,
                        end_unix_nano: s.end_time_unix_nano,
                        attributes: attrs(&s.attributes),
                    };
                    lines.push(
                        serde_json::to_string(&rec)
                            .map_err(|e| tonic::Status::internal(e.to_string()))?,
                    );
                }
            }
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        for l in lines {
            writeln!(out, "{l}").map_err(|e| tonic::Status::internal(e.to_string()))?;
        }
        out.flush()
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Receive spans on `listener`, appending them to `file`, until `shutdown`.
pub async fn run(
    listener: TcpListener,
    file: PathBuf,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)?;
    let sink = Sink {
        out: Mutex::new(std::io::BufWriter::new(f)),
    };
    let (router, health) = shoal_common::grpc::server_with_auth(
        &["opentelemetry.proto.collector.trace.v1.TraceService"],
        shoal_common::auth::AuthLayer::open(),
    )
    .await;
    health.set(true).await;
    tracing::info!(addr = %listener.local_addr()?, file = %file.display(), "trace sink receiving OTLP/gRPC");
    router
        .add_service(TraceServiceServer::new(sink).max_decoding_message_size(64 << 20))
        .serve_with_incoming_shutdown(
            shoal_common::net::incoming(listener),
            shutdown.cancelled_owned(),
        )
        .await?;
    Ok(())
}

/// Read every span recorded in `file` (lines that do not parse are skipped).
pub fn read(file: &std::path::Path) -> std::io::Result<Vec<SpanRecord>> {
    let text = std::fs::read_to_string(file)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}
