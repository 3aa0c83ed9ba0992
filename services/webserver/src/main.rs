use shoal_common::{config, shutdown, telemetry};
use shoal_webserver::WebserverConfig;

#[tokio::main]
async fn main() {
    let cfg = config::exit_on_error(WebserverConfig::from_env());
    let telemetry = telemetry::init("shoal-webserver", "info");
    let bind = |addr: std::net::SocketAddr, var: &'static str| async move {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("shoal-webserver: cannot listen on {addr} ({var}): {e}");
                std::process::exit(1);
            }
        }
    };
    let grpc = bind(cfg.listen_addr, "SHOAL_LISTEN_ADDR").await;
    let http = bind(cfg.http_addr, "SHOAL_HTTP_ADDR").await;
    let result = shoal_webserver::run(cfg, grpc, http, shutdown::on_signal()).await;
    telemetry.shutdown();
    if let Err(e) = result {
        eprintln!("shoal-webserver: {e:#}");
        std::process::exit(1);
    }
}
