use shoal_common::{config, shutdown, telemetry};
use shoal_peer::PeerConfig;

#[tokio::main]
async fn main() {
    let cfg = config::exit_on_error(PeerConfig::from_env());
    let telemetry = telemetry::init("shoal-peer", "info");
    let listener = match tokio::net::TcpListener::bind(cfg.listen_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "shoal-peer: cannot listen on {} (SHOAL_LISTEN_ADDR): {e}",
                cfg.listen_addr
            );
            std::process::exit(1);
        }
    };
    let result = shoal_peer::run(cfg, listener, shutdown::on_signal()).await;
    telemetry.shutdown();
    if let Err(e) = result {
        eprintln!("shoal-peer: {e:#}");
        std::process::exit(1);
    }
}
