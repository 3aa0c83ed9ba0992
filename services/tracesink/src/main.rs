//! `shoal-trace-sink`: OTLP/gRPC receiver for development. Listens on
//! `SHOAL_LISTEN_ADDR` (default 127.0.0.1:4317), writes JSON lines to
//! `SHOAL_TRACE_FILE` (default .shoal/traces.jsonl).

#[tokio::main]
async fn main() {
    let addr = std::env::var("SHOAL_LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:4317".into());
    let file = std::env::var("SHOAL_TRACE_FILE").unwrap_or_else(|_| ".shoal/traces.jsonl".into());
    let addr: std::net::SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("invalid configuration: SHOAL_LISTEN_ADDR={addr}: {e}");
            std::process::exit(64);
        }
    };
    // The sink never exports its own spans (that would loop).
    let _t = shoal_common::telemetry::init_logs_only("info");
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("shoal-trace-sink: cannot listen on {addr} (SHOAL_LISTEN_ADDR): {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) =
        shoal_tracesink::run(listener, file.into(), shoal_common::shutdown::on_signal()).await
    {
        eprintln!("shoal-trace-sink: {e:#}");
        std::process::exit(1);
    }
}
